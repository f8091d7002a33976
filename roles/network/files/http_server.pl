# The web container's PID 1: perl -e "$(cat http_server.pl)" PORT NAME. A tiny HTTP/1.0 server on PORT that
# answers every request with "hello from NAME" - perl-base's IO::Socket::INET is all a minbase root needs.
# SIGTERM ends it at once (a PID 1 without a handler would ignore it until the SIGKILL after stop_timeout).
use strict;
use warnings;
use IO::Socket::INET;
$SIG{TERM} = sub { exit 0 };
my ($port, $name) = @ARGV;
my $server = IO::Socket::INET->new(LocalPort => $port, Proto => 'tcp', Listen => 16, ReuseAddr => 1)
    or die "cannot listen on port $port: $!\n";
while (my $client = $server->accept) {
    $client->autoflush(1);
    while (my $line = <$client>) {
        last if $line =~ /^\r?\n\z/;
    }
    my $body = "hello from $name\n";
    print $client "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " . length($body)
        . "\r\nConnection: close\r\n\r\n$body";
    close $client;
}
