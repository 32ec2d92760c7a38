# SPDX-License-Identifier: Apache-2.0
"""The service module shown in docs/modules.md works as documented, in the real Apache."""

import os
import re
import xmlrpc.client

import pytest

from tests.helpers import ROOT, basic_proxy, make_acl_dir, make_state_dir, shipped_modules, start_instance


def test_readme_notes_module(tmp_path):
    with open(os.path.join(ROOT, "docs", "modules.md")) as f:
        doc = f.read()
    code = re.search(r'```python\n("""notes:.*?)```', doc, re.S).group(1)
    modules = make_state_dir("clarens-doc-mods-")
    os.makedirs(os.path.join(modules, "notes"))
    with open(os.path.join(modules, "notes", "__init__.py"), "w") as f:
        f.write(code)
    os.chmod(os.path.join(modules, "notes"), 0o755)
    acl = tmp_path / "notes.acl"
    acl.write_text(re.search(r"```apache\n(<Acl notes>.*?)```", doc, re.S).group(1))
    inst = start_instance("clarens-doc-", options={
        "clarens.server.modules_path": "%s:%s" % (shipped_modules(), modules),
        "clarens.server.acl_dir": make_acl_dir(str(acl)),
        "clarens.module:notes.max_notes": "5"})
    try:
        anon = xmlrpc.client.ServerProxy(inst.url)
        proxy = basic_proxy(inst, "demo")
        assert anon.notes.get("welcome") == {"text": "hello", "by": "server"}
        with pytest.raises(xmlrpc.client.Fault) as info:
            anon.notes.add("n0", "anonymous may not write")
        assert info.value.faultCode == -32001
        assert proxy.notes.add("n1", "first") is True
        assert proxy.notes.get("n1") == {"text": "first", "by": "demo"}
        with pytest.raises(xmlrpc.client.Fault) as info:
            proxy.notes.add("n1", "again")
        assert info.value.faultCode == 1001
        for n in range(2, 5):                      # max_notes 5: the welcome note and four more
            proxy.notes.add("n%d" % n, "more")
        with pytest.raises(xmlrpc.client.Fault) as info:
            proxy.notes.add("n5", "one too many")
        assert info.value.faultCode == 1003 and "5 notes" in info.value.faultString
        with open(inst.error_log) as log:         # the test instances log at info
            assert "notes ready, at most 5 notes" in log.read()
        assert proxy.system.methodSignature("notes.add") == [["boolean", "string", "string"]]
        assert proxy.system.methodHelp("notes.get").startswith("Return the note called NAME")
    finally:
        inst.stop()
