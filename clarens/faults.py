# SPDX-License-Identifier: Apache-2.0
"""Fault codes and the exception service code raises to answer with a fault.

The codes follow the XML-RPC fault-code interoperability spec
(http://xmlrpc-epi.sourceforge.net/specs/rfc.fault_codes.php), which JSON-RPC 2.0
shares.  Codes in -32000..-32099 are this host's own, from the range both specs
reserve for implementation-defined server errors.
"""

PARSE_ERROR = -32700          # not well-formed, not UTF-8, or a value that cannot be decoded
INVALID_REQUEST = -32600      # well-formed but not a valid request (structure, method name, size)
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602       # wrong count or types against methods_sig
INTERNAL_ERROR = -32603       # the host itself failed (e.g. a result that cannot be encoded)
APPLICATION_ERROR = -32500    # a service method raised something other than Fault
ACCESS_DENIED = -32001        # the caller's identity may not call this method
SERVICE_UNAVAILABLE = -32002  # a backend the service needs is down (e.g. the burner helper)
READ_ONLY = -32003            # a live change refused: this host's copy is deployed, not changed in place


class Fault(Exception):
    """An RPC fault: raise it from service code to answer with (code, message)."""

    def __init__(self, code: int, message: str):
        super().__init__(code, message)
        self.code = int(code)
        self.message = str(message)

    def __str__(self) -> str:
        return "%d: %s" % (self.code, self.message)

    def as_struct(self) -> dict:
        """The XML-RPC fault struct (also what system.multicall returns in place)."""
        return {"faultCode": self.code, "faultString": self.message}
