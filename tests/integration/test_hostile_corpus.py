# SPDX-License-Identifier: Apache-2.0
"""The hostile-input corpus (tests/hostile/*.case, format in tests/hostile/README.md) against Apache and the helper."""

import base64
import glob
import json
import os
import re
import shutil
import socket
import stat
import xmlrpc.client
from dataclasses import dataclass, field

import pytest

from clarens.burnerd.client import BurnerClient
from clarens.dev import devpki
from tests.helpers import ROOT, concurrently, make_state_dir, shipped_modules, start_instance

CASES = sorted(glob.glob(os.path.join(ROOT, "tests", "hostile", "*.case")))
SINGLE = {"target", "request", "auth", "expect-status", "expect-fault", "expect-each", "expect-id", "expect-result",
          "expect-content-type", "expect-memory-mb"}
MULTI = {"header", "omit", "setup", "expect-message", "expect-not", "expect-header"}
TARGETS = {"rpc": "POST /clarens/ HTTP/1.1", "http": None, "upload": None, "helper": None}
MAX_BASE64 = 1 << 20     # this instance's [server] max_base64, so that a base64 value over it fits in max_body
ISO_HEAD = 32769         # where an ISO 9660 image has "CD001"


@dataclass
class Case:
    """One parsed case file."""
    name: str
    target: str
    request: str
    auth: str
    headers: list = field(default_factory=list)
    omit: set = field(default_factory=set)
    setup: list = field(default_factory=list)
    expect: dict = field(default_factory=dict)
    body: bytes | None = None       # None: no body at all
    generator: str | None = None    # "NAME ARGS" of a generated body, made when the case is sent


def unescape(text: str) -> bytes:
    r"""UTF-8 of ``text`` with every ``\xNN`` made the byte NN."""
    out, pos = bytearray(), 0
    for m in re.finditer(r"\\x([0-9A-Fa-f]{2})", text):
        out += text[pos:m.start()].encode("utf-8")
        out.append(int(m.group(1), 16))
        pos = m.end()
    return bytes(out + text[pos:].encode("utf-8"))


def parse_case(path: str) -> Case:
    """Read a case file; ValueError for anything the format does not allow."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = text.split("\n")
    sep = "---" in lines
    cut = lines.index("---") if sep else len(lines)
    head, body = lines[:cut], "\n".join(lines[cut + 1:])
    values: dict = {key: [] for key in MULTI}
    comments = 0
    for line in head:
        if not line.strip() or line.startswith("#"):
            comments += line.startswith("#")
            continue
        key, colon, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if not colon or key not in SINGLE | MULTI:
            raise ValueError("%s: unknown line %r" % (path, line))
        if key in MULTI:
            values[key].append(value)
        elif key in values:
            raise ValueError("%s: %s given twice" % (path, key))
        else:
            values[key] = value
    if not comments or "target" not in values or "expect-status" not in values:
        raise ValueError("%s: a case needs a comment, a target and expect-status" % path)
    target = values["target"]
    if target not in TARGETS:
        raise ValueError("%s: unknown target %r" % (path, target))
    request = values.get("request") or TARGETS[target]
    if request is None:
        raise ValueError("%s: target %s needs a request line" % (path, target))
    case = Case(os.path.basename(path), target, request, values.get("auth", "demo" if target == "upload" else "none"),
                values["header"], {h.lower() for h in values["omit"]}, values["setup"],
                {k: v for k, v in values.items() if k.startswith("expect-") and v != []})
    if sep:
        body = body[:-1] if body.endswith("\n") else body
        if body.startswith("generate:") and "\n" not in body:
            case.generator = body[len("generate:"):].strip()
            if case.generator.partition(" ")[0] not in GENERATORS:
                raise ValueError("%s: unknown generator in %r" % (path, body))
        else:
            case.body = unescape(body)
    return case


# -- generators for bodies too big or too binary to write out ---------------------------------------------

XML_CALL = "<?xml version='1.0'?><methodCall><methodName>%s</methodName><params>%s</params></methodCall>"


def xml_param(value: str, method: str = "echo.echo") -> bytes:
    """A call of METHOD with one parameter, given as XML."""
    return (XML_CALL % (method, "<param>%s</param>" % value)).encode()


def gen_xml_array(n: str) -> bytes:
    """echo.echo of an array of N ints."""
    return xml_param("<value><array><data>%s</data></array></value>" % ("<value><int>1</int></value>" * int(n)))


def gen_xml_struct(n: str) -> bytes:
    """echo.echo of a struct of N members."""
    members = "".join("<member><name>k%d</name><value>1</value></member>" % i for i in range(int(n)))
    return xml_param("<value><struct>%s</struct></value>" % members)


def gen_xml_struct_mb(mb: str) -> bytes:
    """echo.echo of one struct whose body is about MB megabytes (short members: as many as fit)."""
    member = "<member><name>k</name><value>1</value></member>"
    return xml_param("<value><struct>%s</struct></value>" % (member * int(float(mb) * 1e6 / len(member))))


def gen_xml_values(spec: str) -> bytes:
    """echo.echo of ARRAYS arrays of SIZE ints each."""
    arrays, size = map(int, spec.split())
    inner = "<value><array><data>%s</data></array></value>" % ("<value>1</value>" * size)
    return xml_param("<value><array><data>%s</data></array></value>" % (inner * arrays))


def gen_xml_base64(n: str) -> bytes:
    """echo.echo of a base64 value of N encoded bytes."""
    return xml_param("<value><base64>%s</base64></value>" % ("QUJD" * (int(n) // 4)))


def gen_xml_deep(levels: str) -> bytes:
    """echo.echo of arrays nested LEVELS deep."""
    n = int(levels)
    return xml_param("<value><array><data>" * n + "</data></array></value>" * n)


def gen_xml_nested_param(levels: str) -> bytes:
    """echo.echo(1) with the <param> element nested LEVELS deep (well-formed, but no methodCall)."""
    n = int(levels)
    return ("<methodCall><methodName>echo.echo</methodName><params>%s<value>1</value>%s</params></methodCall>"
            % ("<param>" * n, "</param>" * n)).encode()


def gen_xml_bare_strings(n: str) -> bytes:
    """One <param> holding N <string> elements without <value>."""
    return (XML_CALL % ("echo.echo", "<param>%s</param>" % ("<string>ab</string>" * int(n)))).encode()


def gen_xml_stray_names(n: str) -> bytes:
    """One <param> holding N <name> elements outside any struct."""
    return (XML_CALL % ("echo.echo", "<param>%s</param>" % ("<name>ab</name>" * int(n)))).encode()


def gen_encoded(spec: str) -> bytes:
    """TEXT (the rest of the line) in ENCODING (with its byte-order mark, if the codec writes one)."""
    encoding, _, text = spec.partition(" ")
    return text.encode(encoding)


def gen_json_call(params: str, method: str = "echo.echo") -> bytes:
    """A JSON-RPC call of METHOD with PARAMS (JSON text, without the brackets)."""
    return ('{"jsonrpc":"2.0","method":"%s","params":[%s],"id":1}' % (method, params)).encode()


def gen_json_deep(levels: str) -> bytes:
    """A JSON body of LEVELS nested arrays (nothing else)."""
    return b"[" * int(levels) + b"]" * int(levels)


def gen_json_deep_params(levels: str) -> bytes:
    """echo.echo of arrays nested LEVELS deep."""
    return gen_json_call("[" * int(levels) + "]" * int(levels))


def gen_json_array(n: str) -> bytes:
    """echo.echo of an array of N numbers."""
    return gen_json_call("[%s]" % ",".join(["1"] * int(n)))


def gen_json_values(spec: str) -> bytes:
    """echo.echo of ARRAYS arrays of SIZE numbers each."""
    arrays, size = map(int, spec.split())
    return gen_json_call("[%s]" % ",".join(["[%s]" % ",".join(["1"] * size)] * arrays))


def gen_json_object_mb(mb: str) -> bytes:
    """echo.echo of one object of about MB megabytes."""
    count = int(float(mb) * 1e6 / 14)
    return gen_json_call("{%s}" % ",".join('"k%07d":1' % i for i in range(count)))


def gen_json_empty_objects(n: str) -> bytes:
    """echo.echo of an array of N empty objects."""
    return gen_json_call("[%s]" % ",".join(["{}"] * int(n)))


def gen_json_batch(spec: str) -> bytes:
    """A batch of N calls of METHOD without parameters."""
    n, method = spec.split()
    return ("[%s]" % ",".join('{"jsonrpc":"2.0","method":"%s","id":%d}' % (method, i) for i in range(int(n)))).encode()


def gen_json_big_int(digits: str) -> bytes:
    """echo.echo of an integer of DIGITS digits."""
    return gen_json_call("9" * int(digits))


def gen_zeros(n: str) -> bytes:
    """N zero bytes."""
    return bytes(int(n))


def gen_job(spec: str) -> bytes:
    """A helper job request whose FIELD is a string of N copies of TEXT (the rest: valid values)."""
    name, n, text = spec.split()
    job = {"image": "x.iso", "drive": "sim0", "identity": "demo", name: text * int(n)}
    return json.dumps(job, ensure_ascii=False).encode()


def gen_job_speed_digits(digits: str) -> bytes:
    """A helper job request whose speed is an integer of DIGITS digits."""
    return ('{"image":"x.iso","drive":"sim0","identity":"demo","speed":%s}' % ("9" * int(digits))).encode()


GENERATORS = {name[4:]: fn for name, fn in globals().items() if name.startswith("gen_")}


# -- files a case needs in the images directory ------------------------------------------------------------

def make_file(inst, name: bytes, size: int = 40000, iso: bool = True, owner: int | None = None) -> bytes:
    """A sparse file of SIZE bytes in the images directory, with the ISO signature if ``iso``."""
    path = os.path.join(inst.images_dir.encode(), name)
    with open(path, "wb") as f:
        f.truncate(size)
        if iso:
            f.seek(ISO_HEAD)
            f.write(b"CD001")
    os.chmod(path, 0o640)
    st = os.stat(inst.images_dir)
    os.chown(path, st.st_uid if owner is None else owner, st.st_gid)
    return path


def run_setup(inst, lines: list) -> list:
    """Carry out a case's setup lines; the paths to remove afterwards."""
    made = []
    for line in lines:
        action, *args = line.split()
        name = unescape(args[0])            # \xNN: a name that is not UTF-8
        path = os.path.join(inst.images_dir.encode(), name)
        made.append(path)
        if action == "iso":
            make_file(inst, name, int(args[1]) if len(args) > 1 else 40000)
        elif action == "file":
            make_file(inst, name, iso=False)
        elif action == "rootiso":
            make_file(inst, name, owner=0)
        elif action == "symlink":
            os.symlink(args[1], path)
        elif action == "hardlink":
            os.link(os.path.join(inst.images_dir.encode(), unescape(args[1])), path)
        elif action == "fifo":
            os.mkfifo(path)
        elif action == "dir":
            os.mkdir(path)
        else:
            raise ValueError("unknown setup %r" % line)
    return made


def remove(paths: list) -> None:
    """Remove what run_setup made."""
    for path in reversed(paths):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            shutil.rmtree(path)
        else:
            os.unlink(path)


# -- sending and reading -------------------------------------------------------------------------------------

@dataclass
class Answer:
    """What came back: status (None: no status line), headers (lower-case names), body."""
    raw: bytes
    status: int | None
    headers: dict
    body: bytes
    interim: list
    memory: float | None = None     # MB the serving process grew by at its peak (when measured)


def exchange(family: int, address, data: bytes, timeout: float = 20.0) -> bytes:
    """Send ``data`` on a fresh connection and read until the peer closes."""
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(address)
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):   # answered and closed before the body: read the answer
            pass
        received = bytearray()
        try:
            while chunk := sock.recv(1 << 16):
                received += chunk
        except ConnectionResetError:
            pass
        return bytes(received)


def dechunk(body: bytes) -> bytes:
    """The content of a chunked body."""
    out = bytearray()
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if not size:
            break
        out += body[:size]
        body = body[size + 2:]
    return bytes(out)


def parse_answer(raw: bytes) -> Answer:
    """Split a raw HTTP response (skipping 1xx interim responses)."""
    interim, rest = [], raw
    while rest.startswith(b"HTTP/"):
        head, _, body = rest.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if 100 <= status < 200:
            interim.append(status)
            rest = body
            continue
        if "chunked" in headers.get("transfer-encoding", ""):
            body = dechunk(body)
        return Answer(raw, status, headers, body, interim)
    return Answer(raw, None, {}, rest, interim)


def build_request(inst, case: Case, host: str) -> bytes:
    """The raw bytes of a case's request, with Host, Connection and Content-Length added unless given or omitted."""
    port = str(inst.port)
    lines = [unescape(case.request.replace("@PORT@", port))]
    given = set()
    for header in case.headers:
        given.add(header.partition(":")[0].strip().lower())
        lines.append(unescape(header.replace("@PORT@", port)))
    auto = [("host", "Host: " + host), ("connection", "Connection: close")]
    if case.body is not None:
        auto.append(("content-length", "Content-Length: %d" % len(case.body)))
    if case.auth != "none":
        secret = devpki.credentials(inst.state_dir)[case.auth]
        auto.append(("authorization", "Authorization: Basic " + base64.b64encode(
            ("%s:%s" % (case.auth, secret)).encode()).decode()))
    if case.target == "rpc":
        auto.append(("content-type", "Content-Type: text/xml"))
    lines += [text.encode() for name, text in auto if name not in given and name not in case.omit]
    return b"\r\n".join(lines) + b"\r\n\r\n" + (case.body or b"")


def memory(pid: int) -> tuple[int, int]:
    """(resident, peak resident) kB of a process."""
    with open("/proc/%d/status" % pid) as f:
        fields = dict(line.split(":", 1) for line in f.read().splitlines())
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def reset_peaks(pids: list) -> dict:
    """Reset the peak resident size of ``pids`` (Linux: clear_refs 5); their resident kB now."""
    now = {}
    for pid in pids:
        try:
            with open("/proc/%d/clear_refs" % pid, "w") as f:
                f.write("5")
            now[pid] = memory(pid)[0]
        except OSError:     # gone meanwhile
            pass
    return now


def peak_growth(before: dict) -> float | None:
    """The largest growth in MB of a process's peak resident size since ``reset_peaks`` (None: not measured)."""
    if not before:
        return None
    growth = 0
    for pid, resident in before.items():
        try:
            growth = max(growth, memory(pid)[1] - resident)
        except OSError:
            pass
    return growth / 1024


def send(inst, case: Case) -> Answer:
    """Send a case's request to its target; the answer, with the memory it cost when the case bounds that."""
    before = {}
    if "expect-memory-mb" in case.expect:
        before = reset_peaks([inst.helper_pid()] if case.target == "helper" else inst.processes())
    if case.target == "helper":
        data = build_request(inst, case, "burner")
        raw = exchange(socket.AF_UNIX, helper_socket(inst), data)
    else:
        data = build_request(inst, case, "127.0.0.1:%d" % inst.port)
        raw = exchange(socket.AF_INET, ("127.0.0.1", inst.port), data)
    answer = parse_answer(raw)
    answer.memory = peak_growth(before)
    return answer


def helper_socket(inst) -> str:
    return inst.all_options()["clarens.module:burner.socket"]


# -- what the answer says --------------------------------------------------------------------------------------

def outcome(value) -> str:
    """"ok" for a result (a one-element array in a multicall), else the error's code, as text."""
    if isinstance(value, dict) and "faultCode" in value:
        return str(value["faultCode"])
    if isinstance(value, dict) and isinstance(value.get("error"), dict):
        return str(value["error"].get("code"))
    return "ok"


@dataclass
class Reading:
    """The protocol's view of a body: a fault/error code (or "none"), per-element outcomes, result, id."""
    code: str | None = None
    each: list | None = None
    result: object = None
    request_id: object = None


def big_int(text: str):
    """An int, or its digits as text past this process's int-parsing limit (so that such an answer can be read)."""
    return int(text) if len(text.lstrip("-")) <= 4000 else text


def read_body(answer: Answer) -> Reading:
    """Decode the body by its Content-Type; AssertionError if it claims a format it does not hold."""
    ctype = answer.headers.get("content-type", "")
    reading = Reading()
    if not answer.body:
        return reading
    if ctype.startswith("text/xml"):
        try:
            reading.result = xmlrpc.client.loads(answer.body, use_builtin_types=True)[0][0]
            reading.code = "none"
        except xmlrpc.client.Fault as fault:
            reading.code = str(fault.faultCode)
        except Exception as e:   # anything else: a malformed methodResponse
            raise AssertionError("malformed XML-RPC response: %r: %r" % (e, answer.body[:300])) from None
        if isinstance(reading.result, list):
            reading.each = [outcome(v) if isinstance(v, dict) else "ok" for v in reading.result]
    elif ctype.startswith("application/json"):
        try:
            value = json.loads(answer.body, parse_int=big_int)
        except ValueError:
            raise AssertionError("malformed JSON response: %r" % answer.body[:300]) from None
        if isinstance(value, list):
            reading.each = [outcome(v) for v in value]
        elif isinstance(value, dict):
            error = value.get("error")
            reading.code = str(error.get("code")) if isinstance(error, dict) else "none"
            reading.result, reading.request_id = value.get("result"), value.get("id")
            if isinstance(reading.result, list):
                reading.each = [outcome(v) if isinstance(v, dict) else "ok" for v in reading.result]
    return reading


def expand_each(spec: str) -> list:
    """``ok -32600*3`` -> ["ok", "-32600", "-32600", "-32600"]."""
    out = []
    for token in spec.split():
        what, star, count = token.partition("*")
        out += [what] * (int(count) if star else 1)
    return out


def check(case: Case, answer: Answer) -> None:
    """Assert every expectation of ``case`` and the invariants every answer must meet."""
    expect = case.expect
    shown = answer.raw[:600]
    status = None if expect["expect-status"] == "none" else int(expect["expect-status"])
    assert answer.status == status, "status %s, expected %s: %r" % (answer.status, status, shown)
    assert b"Traceback" not in answer.raw, shown
    if case.target != "helper":       # never Apache's HTML error page: one line of text
        assert b"<!DOCTYPE HTML PUBLIC" not in answer.body and not answer.headers.get(
            "content-type", "").startswith("text/html; charset=iso-8859-1"), shown
    length = answer.headers.get("content-length")
    if length is not None and not case.request.startswith("HEAD "):
        assert len(answer.body) == int(length), "an incomplete answer: %r" % shown
    reading = read_body(answer)
    if "expect-fault" in expect:
        assert reading.code in expect["expect-fault"].split(" | "), "code %s, expected %s: %r" % (
            reading.code, expect["expect-fault"], shown)
    if "expect-each" in expect:
        wanted = expand_each(expect["expect-each"])
        assert reading.each == wanted, "outcomes %s, expected %s: %r" % (
            None if reading.each is None else " ".join(reading.each)[:300], " ".join(wanted)[:300], shown)
    if "expect-id" in expect:
        assert reading.request_id == json.loads(expect["expect-id"]), shown
    if "expect-result" in expect:
        assert reading.result == json.loads(expect["expect-result"]), shown
    text = answer.body.decode("utf-8", "replace")
    for message in expect.get("expect-message", []):
        assert message in text, "%r not in the answer: %r" % (message, shown)
    for absent in expect.get("expect-not", []):
        assert unescape(absent) not in answer.raw, "%r in the answer: %r" % (absent, shown)
    for header in expect.get("expect-header", []):
        name, _, value = header.partition(":")
        got = answer.headers.get(name.strip().lower())
        assert got is not None and value.strip() in got, "header %s: %r: %r" % (name, got, shown)
    if "expect-content-type" in expect:
        got = answer.headers.get("content-type", "")
        assert got.startswith(expect["expect-content-type"]), "Content-Type %r: %r" % (got, shown)
    if "expect-memory-mb" in expect:
        assert answer.memory is not None, "the server's memory could not be measured (this needs root)"
        assert answer.memory <= float(expect["expect-memory-mb"]), "the server grew by %.0f MB" % answer.memory


# -- the tests -----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def corpus():
    """A private instance and helper for the corpus, with the offsets its logs had before it ran."""
    # The shipped modules and the probe, without the test modules that fail on purpose (their tracebacks would
    # be logged by every child Apache starts during the run).
    modules = make_state_dir("clarens-corpus-modules-")
    os.symlink(os.path.join(ROOT, "tests", "modules", "probe"), os.path.join(modules, "probe"))
    inst = start_instance("clarens-corpus-", options={"clarens.server.max_base64": str(MAX_BASE64),
                                                       "clarens.server.modules_path": "%s:%s" % (
                                                           shipped_modules(), modules)})
    marks = {path: os.path.getsize(path) if os.path.exists(path) else 0
             for path in (inst.error_log, inst.burnerd_log)}
    yield inst, marks
    inst.stop()
    shutil.rmtree(inst.state_dir, ignore_errors=True)
    for directory in (modules, inst.options["clarens.server.acl_dir"]):
        shutil.rmtree(directory, ignore_errors=True)


def test_the_corpus_is_big_enough():
    """At least 80 cases, each of which parses."""
    assert len(CASES) >= 80
    for path in CASES:
        parse_case(path)


@pytest.mark.parametrize("path", CASES, ids=[os.path.basename(p)[:-5] for p in CASES])
def test_case(corpus, path):
    """Send one case and check the answer."""
    inst, _ = corpus
    case = parse_case(path)
    if case.generator:
        name, _, args = case.generator.partition(" ")
        case.body = GENERATORS[name](args)
    made = run_setup(inst, case.setup)
    try:
        answer = send(inst, case)
    finally:
        remove(made)
    check(case, answer)


def test_host_and_helper_survive_the_corpus(corpus):
    """Every child still serves, the helper still answers, and nothing crashed meanwhile."""
    inst, marks = corpus

    def list_methods():
        return xmlrpc.client.ServerProxy(inst.url).system.listMethods()
    assert all("system.listMethods" in methods for methods in concurrently(list_methods, 64))
    assert BurnerClient(helper_socket(inst), timeout=5).status()["version"]
    for path, mark in marks.items():
        with open(path, errors="replace") as f:
            f.seek(mark)
            log = f.read()
        for bad in ("Traceback", "Segmentation fault", "exit signal"):
            assert bad not in log, "%s in %s:\n%s" % (bad, path, log[-3000:])
