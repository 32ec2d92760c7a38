# SPDX-License-Identifier: Apache-2.0
"""system: introspection, multicall and facts about the server and the caller."""

import platform

import clarens
from clarens import context
from clarens.faults import INVALID_PARAMS, Fault

try:
    from mod_python import version as _mp_version
    MOD_PYTHON_VERSION = _mp_version.version
except ImportError:
    MOD_PYTHON_VERSION = "not running under mod_python"

_CAPABILITIES = {
    "xmlrpc": {"specUrl": "http://xmlrpc.com/spec.md", "specVersion": 1},
    "introspection": {"specUrl": "http://xmlrpc-c.sourceforge.net/introspection.html", "specVersion": 1},
    "system.multicall": {"specUrl": "https://mirrors.talideon.com/articles/multicall.html", "specVersion": 1},
    "faults_interop": {"specUrl": "http://xmlrpc-epi.sourceforge.net/specs/rfc.fault_codes.php",
                       "specVersion": 20010516},
    "nil": {"specUrl": "http://ontosys.com/xml-rpc/extensions.php", "specVersion": 20010518},
    "json-rpc": {"specUrl": "https://www.jsonrpc.org/specification", "specVersion": 2},
}


def _method(name):
    method = context.current().methods.get(name) if isinstance(name, str) else None
    if method is None:
        raise Fault(INVALID_PARAMS, "no method named %r" % (name,))
    return method


def listMethods():
    """Return the names of every method this server offers, sorted."""
    return sorted(context.current().methods)


def methodSignature(name):
    """Return the signatures of method NAME as a list of [return type, parameter types...]
    lists, or the string "undef" if the method does not declare any."""
    method = _method(name)
    return [list(s) for s in method.signatures] if method.signatures else "undef"


def methodHelp(name):
    """Return the help text of method NAME (its docstring), or an empty string."""
    return _method(name).help


def multicall(calls):
    """Run several calls in one request.

    CALLS is an array of structs {methodName: string, params: array}.  Returns an
    array with, for each call in order, either a one-element array holding its
    result or a fault struct {faultCode, faultString}.  Each call is checked and
    run on its own: a fault in one does not stop the others.  system.multicall
    itself may not be called inside a multicall.
    """
    return context.current().multicall(calls)


def getCapabilities():
    """Return the specifications this server implements, as {name: {specUrl, specVersion}}."""
    return _CAPABILITIES


def listModules():
    """Return every service module with its status: loaded, or failed with the error message
    (and, for administrators, the directory it was loaded from)."""
    return context.current().modules()


def whoami():
    """Return the caller as this server sees it: {identity, source, authenticated, groups}, and
    session (its id) when the call comes in a session (system.auth)."""
    return context.current().identity.describe()


def auth():
    """Open a session: call it with a password (Basic authentication, over HTTPS) or a client
    certificate, and send the token it returns with the calls that follow, instead of the password:
    as the header "Authorization: Bearer TOKEN".  Returns {token, id, identity, source, issued,
    expires, idle_timeout} (times in seconds since the epoch; idle_timeout in seconds: the session
    ends when unused that long, and at the latest at expires).  An answer may carry a renewed token
    in the header X-Clarens-Session: send that one from then on.  A token that is refused (expired,
    revoked, the password changed) gets fault -32001 with HTTP 401: call system.auth again."""
    return context.current().open_session()


def logout():
    """End the session this call comes in (sent with its token): the token is refused from then on,
    on every host.  Returns true."""
    return context.current().close_session()


MAY_CALL_AT_ONCE = 100     # names one mayCall asks about


def mayCall(names):
    """Return whether the access-control policy lets the caller call each of NAMES (an array of
    method names, or names the policy knows, such as burner.upload), as {name: boolean}: what the
    discovery page marks, for a page to offer only what the caller may do.  At most 100 names."""
    if not all(isinstance(name, str) for name in names):
        raise Fault(INVALID_PARAMS, "names must be strings")
    if len(names) > MAY_CALL_AT_ONCE:
        raise Fault(INVALID_PARAMS, "at most %d names at once" % MAY_CALL_AT_ONCE)
    ctx = context.current()
    return {name: ctx.may_call(name) for name in names}


def serverInfo():
    """Return facts about this server process: versions, when it started, its modules (and, for
    administrators, its pid), whether access control is on, off or failed, and the digests of
    the policy in force and of the module set (equal on hosts that decide alike and run the
    same code: compare them across a cluster)."""
    return {"framework_version": clarens.__version__, "api_version": clarens.API_VERSION,
            "python_version": platform.python_version(), "mod_python_version": MOD_PYTHON_VERSION,
            **context.current().server()}


methods_list = {
    "listMethods": listMethods,
    "methodSignature": methodSignature,
    "methodHelp": methodHelp,
    "multicall": multicall,
    "getCapabilities": getCapabilities,
    "listModules": listModules,
    "whoami": whoami,
    "auth": auth,
    "logout": logout,
    "mayCall": mayCall,
    "serverInfo": serverInfo,
}

methods_sig = {
    "listMethods": ["array"],
    "methodSignature": ["array,string", "string,string"],
    "methodHelp": ["string,string"],
    "multicall": ["array,array"],
    "getCapabilities": ["struct"],
    "listModules": ["array"],
    "whoami": ["struct"],
    "auth": ["struct"],
    "logout": ["boolean"],
    "mayCall": ["struct,array"],
    "serverInfo": ["struct"],
}
