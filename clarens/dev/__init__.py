# SPDX-License-Identifier: Apache-2.0
"""Developer tooling, not part of the host and not in the Debian package: the private Apache
instance behind ``./run serve`` and the tests (:mod:`clarens.dev.instance`), its demo certificate
authority and users (:mod:`clarens.dev.devpki`), its burner helper started and kept running as
systemd would (:mod:`clarens.dev.burnerd_launch`, :mod:`clarens.dev.burnerd_supervise`,
:mod:`clarens.dev.socket_activate`), crowds of slow clients (:mod:`clarens.dev.crowd`) and the
package build (:mod:`clarens.dev.package`).  Nothing in the host imports it."""
