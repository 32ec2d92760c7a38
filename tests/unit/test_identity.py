# SPDX-License-Identifier: Apache-2.0
"""Who is calling (clarens.identity): DN parsing, the slash form, certificate checks, from_request."""

import re
import unicodedata

import pytest

from clarens.identity import (
    ANONYMOUS,
    Identity,
    IdentityRefused,
    certificate_problem,
    from_request,
    parse_dn,
    slash_form,
    to_apache,
)

ALICE_DN = "CN=Alice,O=Home,C=UK"      # as mod_ssl gives SSL_CLIENT_S_DN: most specific RDN first
ALICE = "/C=UK/O=Home/CN=Alice"


class DummyRequest:
    """The parts of a mod_python request that identity reads."""

    def __init__(self, ssl=None, user=None, ap_auth_type=None, headers=None):
        self.ssl = dict(ssl or {})
        self.headers_in = dict(headers or {})
        self.user = user
        self.ap_auth_type = ap_auth_type

    def ssl_var_lookup(self, name):
        return self.ssl.get(name)   # mod_python gives None for an unset variable (or plain HTTP)

    def is_https(self):
        return bool(self.ssl)       # mod_ssl has variables only for a TLS connection


def verified(dn):
    return {"SSL_CLIENT_VERIFY": "SUCCESS", "SSL_CLIENT_S_DN": dn}


def rdn_strings(slash):
    """Split a slash form at its unescaped ``/``: one string per RDN."""
    return re.findall(r"/((?:\\.|[^\\/])*)", slash)


# --- parse_dn ------------------------------------------------------------------

@pytest.mark.parametrize("dn, rdns", [
    (ALICE_DN, [[("CN", "Alice")], [("O", "Home")], [("C", "UK")]]),
    ("CN=Alice+UID=alice,O=Home", [[("CN", "Alice"), ("UID", "alice")], [("O", "Home")]]),
    ("CN=Smith\\, John,O=Home", [[("CN", "Smith, John")], [("O", "Home")]]),
    ("CN=a\\+b\\;c\\=d\\\\e\\\"f\\<g\\>", [[("CN", "a+b;c=d\\e\"f<g>")]]),
    ("CN=\\2C\\2B\\3D", [[("CN", ",+=")]]),                       # hex escapes of separators are text
    ("CN=Jos\\C3\\A9 M\\C3\\BCller", [[("CN", "José Müller")]]),  # \XX bytes are UTF-8
    ("CN=José,O=Zürich", [[("CN", "José")], [("O", "Zürich")]]),   # mod_ssl leaves non-ASCII unescaped
    ("CN=\\E6\\97\\A5\\E6\\9C\\AC", [[("CN", "日本")]]),
    ("CN = Alice Smith , O = Home", [[("CN", "Alice Smith")], [("O", "Home")]]),
    ("CN=,O=Home", [[("CN", "")], [("O", "Home")]]),
    ("CN=a=b", [[("CN", "a=b")]]),
    ("CN=a;O=b", [[("CN", "a")], [("O", "b")]]),                  # RFC 2253's other separator
    ("emailAddress=a@b.example,CN=a", [[("emailAddress", "a@b.example")], [("CN", "a")]]),
    ("", []),
])
def test_parse_dn(dn, rdns):
    assert parse_dn(dn) == rdns


@pytest.mark.parametrize("dn", [
    "Alice",
    ",CN=Alice",
    "CN=Alice,,O=Home",
    "CN=Alice,Home",
    "CN=Alice+",
    "+CN=Alice",
    "CN=Alice+alice,O=Home",
    "CN=Alice,O=Home+",
])
def test_malformed_dn_raises(dn):
    with pytest.raises(ValueError, match="malformed DN"):
        parse_dn(dn)


@pytest.mark.parametrize("dn, value", [("CN=Alice\\ ,O=Home", "Alice "), ("CN=\\ Alice,O=Home", " Alice")])
def test_escaped_edge_spaces_are_part_of_the_value(dn, value):
    # RFC 4514 makes a leading or trailing space significant by escaping it, and
    # OpenSSL escapes it so: stripping it would give "CN=Alice " the identity of "CN=Alice".
    assert parse_dn(dn)[0] == [("CN", value)]


# --- slash_form --------------------------------------------------------------

def test_slash_form_reverses_the_order():
    assert slash_form(parse_dn(ALICE_DN)) == ALICE


def test_slash_form_of_a_multi_valued_rdn():
    assert slash_form(parse_dn("CN=Alice+UID=alice,O=Home")) == "/O=Home/CN=Alice+UID=alice"


def test_slash_form_escapes_slash_and_backslash():
    assert slash_form([[("CN", "a/b\\c")]]) == "/CN=a\\/b\\\\c"


def test_slash_form_of_nothing():
    assert slash_form([]) == ""


# (attacker's DN, a legitimate DN): through a value, the attacker tries to be the
# legitimate identity or to fall under it as a prefix.  A value holding "/" must
# not end an RDN, and a value ending in "\" must not escape the "/" that does.
ATTACKS = [
    ("CN=Eve,C=UK/O=Home", "O=Home,C=UK"),              # C value "UK/O=Home"
    ("CN=Eve,C=UK\\2FO=Home", "O=Home,C=UK"),           # the same through a hex escape
    ("CN=Eve,O=Evil,C=UK/O=Home/", "O=Home,C=UK"),
    ("C=UK/O=Home/CN=Alice", ALICE_DN),                 # one RDN spelling out Alice's whole DN
    ("CN=Alice/CN=Eve,O=Home,C=UK", ALICE_DN),          # under a prefix /C=UK/O=Home/CN=Alice/
    ("CN=Eve,OU=x,O=Home\\\\,C=UK", "O=Home/OU=x,C=UK"),  # O value 'Home\' followed by a real RDN
]


@pytest.mark.parametrize("dn, legit", ATTACKS)
def test_a_value_cannot_pass_for_another_rdn(dn, legit):
    rdns = parse_dn(dn)
    slash, target = slash_form(rdns), slash_form(parse_dn(legit))
    assert len(rdn_strings(slash)) == len(rdns)
    assert slash != target
    assert not slash.startswith(target + "/")


def test_slash_form_is_one_to_one():
    # without the backslash escape, O value 'Home\' then OU=x would read as O value 'Home/OU=x'
    dns = {dn for pair in ATTACKS for dn in pair} | {"OU=x,O=Home\\\\,C=UK", "CN=Eve\\\\/,O=Home,C=UK"}
    forms = {}
    for dn in dns:
        rdns = parse_dn(dn)
        assert forms.setdefault(slash_form(rdns), rdns) == rdns, dn


def test_a_value_cannot_pass_for_a_multi_valued_rdn():
    # A CN whose text is "Alice+UID=alice" (an escaped "+") is not the two-valued RDN
    # CN=Alice + UID=alice: unescaped, it would get its identity and match its prefixes.
    single = slash_form(parse_dn("CN=Alice\\+UID=alice,O=Home"))
    multi = slash_form(parse_dn("CN=Alice+UID=alice,O=Home"))
    assert single != multi


# --- certificate_problem -------------------------------------------------------

def test_no_required_fields():
    assert certificate_problem(parse_dn(ALICE_DN), {}) is None


def test_required_fields_present():
    assert certificate_problem(parse_dn(ALICE_DN), {"O": "Home", "C": "UK"}) is None


def test_attribute_names_are_case_insensitive_values_are_not():
    rdns = parse_dn("cn=Alice,o=Home")
    assert certificate_problem(rdns, {"O": "Home"}) is None
    assert certificate_problem(rdns, {"o": "home"}) == "client certificate subject must have O=home"


@pytest.mark.parametrize("dn", [
    "CN=Alice,C=UK",                      # no O at all
    "CN=Alice,O=Home Office,C=UK",        # a longer value
    "CN=Alice,O=Hom,C=UK",
    "CN=O=Home,C=UK",                     # the text in another attribute's value
    "CN=Alice,O=Evil/O=Home,C=UK",
])
def test_required_field_missing(dn):
    assert certificate_problem(parse_dn(dn), {"O": "Home"}) == "client certificate subject must have O=Home"


def test_any_of_several_values_and_multi_valued_rdns_count():
    rdns = parse_dn("CN=Alice+OU=Staff,OU=Lab,O=Home")
    assert certificate_problem(rdns, {"OU": "Staff"}) is None
    assert certificate_problem(rdns, {"OU": "Lab"}) is None


def test_the_first_missing_field_is_reported():
    problem = certificate_problem(parse_dn(ALICE_DN), {"C": "UK", "O": "Work", "L": "Leeds"})
    assert problem == "client certificate subject must have O=Work"


# --- from_request --------------------------------------------------------------

def test_verified_certificate():
    identity = from_request(DummyRequest(verified(ALICE_DN)), {"O": "Home"})
    assert identity == Identity(ALICE, "certificate")
    assert identity.authenticated
    assert identity.describe() == {"identity": ALICE, "source": "certificate", "authenticated": True, "groups": []}


def test_certificate_wins_over_an_apache_user():
    identity = from_request(DummyRequest(verified(ALICE_DN), user="bob", ap_auth_type="Basic"), {})
    assert identity.name == ALICE and identity.source == "certificate"


@pytest.mark.parametrize("verify", [None, "NONE", "GENEROUS", "FAILED:unable to get local issuer certificate",
                                    "success"])
def test_unverified_certificate_is_ignored(verify):
    ssl = {"SSL_CLIENT_VERIFY": verify, "SSL_CLIENT_S_DN": ALICE_DN}
    assert from_request(DummyRequest(ssl), {}) is ANONYMOUS
    assert from_request(DummyRequest(ssl, user="bob", ap_auth_type="Basic"), {}) == Identity("bob", "basic")


def test_verified_certificate_without_required_fields_is_refused():
    with pytest.raises(IdentityRefused, match="must have O=Home"):
        from_request(DummyRequest(verified("CN=Alice,O=Elsewhere,C=UK")), {"O": "Home"})


def test_refused_certificate_does_not_fall_back_to_the_apache_user():
    req = DummyRequest(verified("CN=Alice,C=UK"), user="bob", ap_auth_type="Basic")
    with pytest.raises(IdentityRefused):
        from_request(req, {"O": "Home"})


@pytest.mark.parametrize("dn", [None, "", "CN=Alice,,O=Home", "Alice"])
def test_verified_certificate_with_unusable_subject_is_refused(dn):
    with pytest.raises(IdentityRefused, match="cannot be used as an identity"):
        from_request(DummyRequest(verified(dn)), {})


@pytest.mark.parametrize("auth_type, source", [("Basic", "basic"), ("Digest", "digest"), ("GSSAPI", "gssapi")])
def test_apache_authenticated_user(auth_type, source):
    identity = from_request(DummyRequest(user="alice", ap_auth_type=auth_type), {"O": "Home"})
    assert identity == Identity("alice", source)
    assert identity.authenticated


@pytest.mark.parametrize("auth_type", [None, ""])
def test_user_without_auth_type_is_not_trusted(auth_type):
    # e.g. a user name set by something other than Apache's authentication
    assert from_request(DummyRequest(user="admin", ap_auth_type=auth_type), {}) is ANONYMOUS


@pytest.mark.parametrize("user", ["anonymous", "authenticated", ALICE, "/", "/O=Home/", "unix:root"])
def test_reserved_user_names_are_refused(user):
    with pytest.raises(IdentityRefused, match="is reserved"):
        from_request(DummyRequest(user=user, ap_auth_type="Basic"), {})


def test_anonymous():
    identity = from_request(DummyRequest(), {"O": "Home"})
    assert identity is ANONYMOUS
    assert not identity.authenticated
    assert identity.describe() == {"identity": "anonymous", "source": "anonymous", "authenticated": False,
                                   "groups": []}


@pytest.mark.parametrize("name", ["ädmin", "管理者", "a\u0308dmin"])
def test_an_apache_user_is_utf8_whatever_mod_python_decoded_it_as(name):
    """mod_python hands on Apache's bytes as Latin-1: ``ädmin`` arrives as ``Ã¤dmin``."""
    as_mod_python_gives_it = name.encode("utf-8").decode("latin-1")
    identity = from_request(DummyRequest(user=as_mod_python_gives_it, ap_auth_type="Basic"), {})
    assert identity == Identity(unicodedata.normalize("NFC", name), "basic")
    assert to_apache(identity.name) == unicodedata.normalize("NFC", name).encode("utf-8").decode("latin-1")
    assert from_request(DummyRequest(user="Ã¤", ap_auth_type="Basic"), {}).name == "ä"
    assert from_request(DummyRequest(user="\xe4", ap_auth_type="Basic"), {}).name == "ä"   # Latin-1 bytes: kept
