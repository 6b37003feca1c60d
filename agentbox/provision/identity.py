"""A warm clone's own identity, given over SSH right after its golden RAM state was restored.

Every clone of one golden state wakes up as the same machine: the golden host key, the
golden bootstrap key in `authorized_keys`, its hostname, its machine-id and its random
generator's state. In one SSH round trip (logged in with the bootstrap key, the golden host
key pinned) agentbox sets the clock, reseeds the RNG and writes a new machine-id (the
refresh, provision/refresh.py), then installs the workspace's own host key (generated and
pinned on the host), makes the workspace's key the only authorized one (so the bootstrap
key stops working) and sets the hostname; sshd is told to reload so every new connection
presents the new key. Nothing else can log in meanwhile: only the bootstrap key, held by
agentbox alone, is authorized until this script replaced it. Create's clean snapshot comes
right after, so the script also leaves the receipts' clean marker and flushes the disk, in
the same round trip (under TCG a login costs the guest ~0.7 s). It is Perl, in the refresh's
own process: as a shell script of coreutils (~20 programs at ~70 ms each) it took longer
than the login.
"""

from __future__ import annotations

from agentbox.errors import InvalidInput
from agentbox.model.guest import GUEST_USER
from agentbox.provision.guest_changes import CLEAN_MARK, MARK_DIR
from agentbox.provision.keys import KeyPair
from agentbox.provision.refresh import refresh_argv_then_perl, refresh_input

GOLDEN_HOSTNAME = "agentbox-golden"

# Runs as root in the refresh's Perl process, after it, on the rest of stdin: three lines
# (hostname, the workspace's public key, the new host key's public line), then the private
# host key. No program is started but sshd's reload (see refresh_argv_then_perl): x86_64
# syscalls 170 sethostname, 162 sync.
IDENTITY_PERL = r"""
my $rest = "";
while (1) {
    my $got = sysread(STDIN, $rest, 65536, length($rest));
    die "identity: $!\n" unless defined $got;
    last unless $got;
}
my ($name, $auth, $hostpub, $private) = split(/\n/, $rest, 4);
die "identity: short input\n" unless defined($private) && length($private);
sub put_file {
    my ($path, $mode, $text) = @_;
    my $tmp = "$path.agentbox";
    open(my $fh, ">", $tmp) or die "$tmp: $!\n";
    print $fh $text or die "$tmp: $!\n";
    close($fh) or die "$tmp: $!\n";
    chmod($mode, $tmp) or die "$tmp: $!\n";
    return $tmp;
}
sub install_file {
    my ($path, $mode, $text, @owner) = @_;
    my $tmp = put_file($path, $mode, $text);
    !@owner or chown(@owner, $tmp) == 1 or die "$tmp: $!\n";
    rename($tmp, $path) or die "$path: $!\n";
}
umask(077);
unlink(glob("/etc/ssh/ssh_host_*_key"), glob("/etc/ssh/ssh_host_*_key.pub"));
install_file("/etc/ssh/ssh_host_ed25519_key", 0600, $private);
install_file("/etc/ssh/ssh_host_ed25519_key.pub", 0644, "$hostpub\n");
my (undef, undef, $uid, $gid) = getpwnam("@USER@") or die "no user @USER@\n";
install_file("/home/@USER@/.ssh/authorized_keys", 0600, "$auth\n", $uid, $gid);
syscall(170, $name, length($name)) == 0 or die "sethostname: $!\n";
install_file("/etc/hostname", 0644, "$name\n");
open(my $in, "<", "/etc/hosts") or die "/etc/hosts: $!\n";
my $hosts = do { local $/; <$in> };
close($in);
$hosts =~ s/\Q@GOLDEN@\E/$name/g;
install_file("/etc/hosts", 0644, $hosts);
sub ssh_listeners {
    my %found;
    for my $table ("/proc/net/tcp", "/proc/net/tcp6") {
        $found{$table} = {};
        open(my $fh, "<", $table) or next;
        while (my $line = <$fh>) {
            my @field = split(" ", $line);
            $found{$table}{$field[9]} = 1 if @field > 9 && $field[1] =~ /:0016$/ && $field[3] eq "0A";
        }
        close($fh);
    }
    return %found;
}
# The reloaded sshd binds anew, one address family after the other: until its new IPv4
# listener is there (QEMU's user net connects over IPv4), a login is refused. So: wait
# until each table that had a listener has only new ones.
my %before = ssh_listeners();
open(my $pidfile, "<", "/run/sshd.pid") or die "sshd.pid: $!\n";
my $sshd = <$pidfile>;
close($pidfile);
chomp($sshd);
kill("HUP", $sshd) == 1 or die "sshd: $!\n";
my $tries = 0;
while (1) {
    my %now = ssh_listeners();
    my $back = 1;
    for my $table (keys %before) {
        next unless %{$before{$table}};
        my @new = grep { !$before{$table}{$_} } keys %{$now{$table}};
        $back = 0 unless @new && @new == keys %{$now{$table}};
    }
    $back = 0 unless grep { %{$now{$_}} } keys %now;
    last if $back;
    die "sshd did not listen again within 5 s of its reload\n" if ++$tries >= 250;
    select(undef, undef, undef, 0.02);
}
mkdir("@MARK_DIR@");
open(my $mark, ">", "@CLEAN_MARK@") or die "@CLEAN_MARK@: $!\n";
close($mark);
syscall(162);
""".replace("@USER@", GUEST_USER).replace("@GOLDEN@", GOLDEN_HOSTNAME).replace(
    "@MARK_DIR@", MARK_DIR).replace("@CLEAN_MARK@", CLEAN_MARK)


def identity_argv() -> tuple[str, ...]:
    return refresh_argv_then_perl(then=IDENTITY_PERL)


def identity_input(*, hostname: str, authorized_key: str, host_key: KeyPair) -> bytes:
    """stdin for identity_argv(): the refresh's input, then the identity itself."""
    lines = (hostname, authorized_key, host_key.public_openssh)
    for line in lines:
        if not line or any(ch in line for ch in "\r\n\0"):
            raise InvalidInput("a clone's hostname and keys must each be one non-empty line")
    private = host_key.private_openssh if host_key.private_openssh.endswith("\n") else host_key.private_openssh + "\n"
    return refresh_input() + ("\n".join(lines) + "\n" + private).encode("ascii")
