# SPDX-License-Identifier: Apache-2.0
"""Third-party XML-RPC clients (Perl's RPC::XML, xmlrpc-api-utils) against the real server."""

import subprocess

from tests.helpers import basic_url

PERL = r'''
use strict; use RPC::XML; use RPC::XML::Client;
$RPC::XML::ALLOW_NIL = 1;
my $c = RPC::XML::Client->new($ARGV[0]);
sub call { my $r = $c->send_request(@_); die "transport: $r\n" unless ref $r; return $r; }
my @strings = map { "s$_" } 0..149;
print "easy=", call("validator1.easyStructTest", {moe => 1, larry => 2, curly => 3})->value, "\n";
print "moderate=", call("validator1.moderateSizeArrayCheck", \@strings)->value, "\n";
print "entities=", call("validator1.countTheEntities", q(<a href='x'>&"))->value->{ctQuotes}, "\n";
my $many = call("validator1.manyTypesTest", RPC::XML::int->new(5), RPC::XML::boolean->new(1), "str",
                RPC::XML::double->new(2.5), RPC::XML::datetime_iso8601->new("20001231T23:59:59"),
                RPC::XML::base64->new("raw bytes"))->value;
print "many=", join("|", @$many), "\n";
my $f = call("no.such");
print "fault=", $f->code, "\n";
my $multi = call("system.multicall", [{methodName => "echo.echo", params => ["x"]},
                                      {methodName => "probe.fault", params => []}])->value;
print "multi=", $multi->[0][0], ",", $multi->[1]{faultCode}, "\n";
'''


def test_perl_rpc_xml_client(server):
    """As the demo user, with Basic authentication (validator1 is for authenticated callers)."""
    out = subprocess.run(["perl", "-e", PERL, basic_url(server, "demo")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [
        "easy=6", "moderate=s0s149", "entities=1", "many=5|1|str|2.5|20001231T23:59:59|raw bytes",
        "fault=-32601", "multi=x,4242"]


def test_xml_rpc_api2txt_reads_the_introspection(server):
    out = subprocess.run(["xml-rpc-api2txt", server.url], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "array validator1.manyTypesTest (int, boolean, string, double, dateTime.iso8601, base64)" in out.stdout
    assert "Return the names of every method this server offers" in out.stdout
