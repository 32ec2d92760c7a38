# SPDX-License-Identifier: Apache-2.0
"""Every exception the client library defines is exported by clarens.client and listed in docs/clients.md."""

import inspect
import os

import clarens.client
from clarens.client import errors
from tests.helpers import ROOT


def test_every_client_exception_is_exported_and_documented():
    defined = {name for name, obj in inspect.getmembers(errors, inspect.isclass)
               if issubclass(obj, Exception) and obj.__module__ == errors.__name__}
    assert defined == {"TransportError", "AllServersDown", "UploadRefused", "UploadFailed", "ClientConfigError"}
    with open(os.path.join(ROOT, "docs", "clients.md")) as f:
        doc = f.read()
    start = doc.index("* **Errors:** everything the library raises")
    table = doc[start:doc.index("* **Security and limits:**", start)]
    for name in defined | {"Fault"}:
        assert name in clarens.client.__all__ and getattr(clarens.client, name) is not None
        assert "| `%s`" % name in table, name
