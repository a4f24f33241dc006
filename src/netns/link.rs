//! Netlink messages that build the shared network ([`super::shared`], [`super::bridge`]):
//! a bridge, a veth pair with one end in another namespace, a link's MTU, master and
//! state, an IPv4 address and a default route. Built here and sent with [`super::rtnl`]
//! (no `ip` binary). Also [`in_child`], which runs a few system calls in a forked child
//! (namespaces are joined there, never in the caller).

use std::net::Ipv4Addr;
use std::os::fd::RawFd;

use super::rtnl::{
    put_attr, Requests, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, RTA_OIF, RTM_NEWROUTE,
    RTPROT_STATIC,
};
use super::Error;

/// The bridge in the shared network namespace.
pub const BRIDGE: &str = "skiff0";
/// slirp4netns's TAP device in the shared network namespace.
pub const TAP: &str = "tap0";
/// The container's side of its veth pair.
pub const GUEST_IF: &str = "eth0";
/// The MTU of every link of the shared network (slirp4netns's `--mtu`).
pub const MTU: u32 = 65520;

const RTM_NEWLINK: u16 = 16;
const RTM_NEWADDR: u16 = 20;
const CREATE: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
const CHANGE: u16 = NLM_F_REQUEST | NLM_F_ACK;
// linux/if_link.h
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const NLA_F_NESTED: u16 = 0x8000;
// linux/if_addr.h, linux/rtnetlink.h
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTA_GATEWAY: u16 = 5;
const RT_TABLE_MAIN: u8 = 254;
const RTN_UNICAST: u8 = 1;

/// One attribute, padded to 4 bytes (to nest in another).
fn attr(ty: u16, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + data.len() + 3);
    put_attr(&mut v, ty, data);
    v
}

fn name(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// struct ifinfomsg: family, pad, type, index, flags, change.
fn ifinfo(index: u32, up: bool) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    if up {
        let f = libc::IFF_UP as u32;
        h[8..12].copy_from_slice(&f.to_ne_bytes());
        h[12..16].copy_from_slice(&f.to_ne_bytes());
    }
    h
}

/// Creates the bridge [`BRIDGE`], up, with the shared network's MTU.
pub fn new_bridge() -> Requests {
    let mut r = Requests::default();
    let info = attr(IFLA_INFO_KIND, b"bridge");
    r.push_flags(
        RTM_NEWLINK,
        CREATE,
        &ifinfo(0, true),
        &[
            (IFLA_IFNAME, &name(BRIDGE)),
            (IFLA_MTU, &MTU.to_ne_bytes()),
            (IFLA_LINKINFO | NLA_F_NESTED, &info),
        ],
    );
    r
}

/// Sets link `index` up, with the shared MTU, enslaved to `master` when given.
pub fn set_up(index: u32, master: Option<u32>) -> Requests {
    let mut r = Requests::default();
    let m = master.map(|m| m.to_ne_bytes());
    let mtu = MTU.to_ne_bytes();
    let mut attrs: Vec<(u16, &[u8])> = vec![(IFLA_MTU, &mtu)];
    if let Some(m) = &m {
        attrs.push((IFLA_MASTER, m));
    }
    r.push_flags(RTM_NEWLINK, CHANGE, &ifinfo(index, true), &attrs);
    r
}

/// Creates a veth pair: `host_name` here (up, enslaved to `master`), [`GUEST_IF`] in the
/// network namespace open on `peer_netns` (down: [`configure_guest`] sets it up).
pub fn new_veth(host_name: &str, master: u32, peer_netns: RawFd) -> Requests {
    let mtu = MTU.to_ne_bytes();
    let mut peer = ifinfo(0, false).to_vec();
    peer.extend(attr(IFLA_IFNAME, &name(GUEST_IF)));
    peer.extend(attr(IFLA_MTU, &mtu));
    peer.extend(attr(IFLA_NET_NS_FD, &(peer_netns as u32).to_ne_bytes()));
    let data = attr(VETH_INFO_PEER | NLA_F_NESTED, &peer);
    let mut info = attr(IFLA_INFO_KIND, b"veth");
    info.extend(attr(IFLA_INFO_DATA | NLA_F_NESTED, &data));
    let mut r = Requests::default();
    r.push_flags(
        RTM_NEWLINK,
        CREATE,
        &ifinfo(0, true),
        &[
            (IFLA_IFNAME, &name(host_name)),
            (IFLA_MTU, &mtu),
            (IFLA_MASTER, &master.to_ne_bytes()),
            (IFLA_LINKINFO | NLA_F_NESTED, &info),
        ],
    );
    r
}

/// Sets the guest's link `index` up with `addr`/`prefix` and a default route via
/// `gateway`.
pub fn configure_guest(index: u32, addr: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Requests {
    let mut r = Requests::default();
    let mtu = MTU.to_ne_bytes();
    r.push_flags(
        RTM_NEWLINK,
        CHANGE,
        &ifinfo(index, true),
        &[(IFLA_MTU, &mtu)],
    );
    // struct ifaddrmsg: family, prefixlen, flags, scope, index.
    let mut h = [0u8; 8];
    h[0] = libc::AF_INET as u8;
    h[1] = prefix;
    h[4..8].copy_from_slice(&index.to_ne_bytes());
    let a = addr.octets();
    r.push_flags(
        RTM_NEWADDR,
        CREATE,
        &h,
        &[(IFA_LOCAL, &a), (IFA_ADDRESS, &a)],
    );
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let h = [
        libc::AF_INET as u8,
        0,
        0,
        0,
        RT_TABLE_MAIN,
        RTPROT_STATIC,
        0,
        RTN_UNICAST,
        0,
        0,
        0,
        0,
    ];
    r.push_flags(
        RTM_NEWROUTE,
        CREATE,
        &h,
        &[
            (RTA_GATEWAY, &gateway.octets()),
            (RTA_OIF, &index.to_ne_bytes()),
        ],
    );
    r
}

/// Sends `r` in the current network namespace; the errno of the first failure.
pub fn send(r: &Requests) -> Result<(), i32> {
    // SAFETY: rtnl::send makes system calls on buffers we own.
    match unsafe { super::rtnl::send_strict(r.bytes(), r.count()) } {
        0 => Ok(()),
        e => Err(e),
    }
}

/// The index of link `name` in the current network namespace.
pub fn index_of(name: &str) -> Result<u32, i32> {
    let c = std::ffi::CString::new(name).map_err(|_| libc::EINVAL)?;
    // SAFETY: a NUL-terminated name; if_nametoindex only reads it.
    match unsafe { libc::if_nametoindex(c.as_ptr()) } {
        0 => Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::ENODEV)),
        i => Ok(i),
    }
}

/// Joins the namespace open on `fd` (`nstype`: a `CLONE_NEW*` flag).
pub fn join(fd: RawFd, nstype: libc::c_int) -> Result<(), i32> {
    // SAFETY: setns on a descriptor we were given; it changes only this (child) process.
    if unsafe { libc::setns(fd, nstype) } < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    Ok(())
}

/// Runs `f` in a forked child and waits for it: `f`'s Err(errno) or a step number
/// comes back as the child's exit code, so the caller says which step failed and why.
/// Call it only while the process has one thread (the monitor before its threads, the
/// shared network's holder).
pub fn in_child(what: &str, f: impl FnOnce() -> Result<(), (u8, i32)>) -> Result<(), Error> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    // SAFETY: the process has one thread (see above), so the child may run ordinary code;
    // it leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork", nix::errno::Errno::last()));
    }
    if pid == 0 {
        drop(r);
        let (step, errno) = match f() {
            Ok(()) => (0u8, 0i32),
            Err(e) => e,
        };
        let mut msg = [0u8; 5];
        msg[0] = step;
        msg[1..5].copy_from_slice(&errno.to_ne_bytes());
        // SAFETY: writes our own buffer to our pipe, then ends the child.
        unsafe {
            libc::write(std::os::fd::AsRawFd::as_raw_fd(&w), msg.as_ptr().cast(), 5);
            libc::_exit(0);
        }
    }
    drop(w);
    let mut msg = [0u8; 5];
    let mut f = std::fs::File::from(r);
    let got = std::io::Read::read_exact(&mut f, &mut msg);
    let child = nix::unistd::Pid::from_raw(pid);
    while let Err(nix::errno::Errno::EINTR) = nix::sys::wait::waitpid(child, None) {}
    if got.is_err() {
        return Err(Error::Helper(format!("{what}: the child died")));
    }
    let errno = i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]);
    if msg[0] == 0 && errno == 0 {
        return Ok(());
    }
    Err(Error::Helper(format!(
        "{what} (step {}): {}",
        msg[0],
        std::io::Error::from_raw_os_error(errno)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(r: &Requests) -> Vec<u16> {
        let b = r.bytes();
        let mut at = 0;
        let mut k = Vec::new();
        while at < b.len() {
            let len = u32::from_ne_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            assert!(len.is_multiple_of(4) && len >= 16);
            k.push(u16::from_ne_bytes(b[at + 4..at + 6].try_into().unwrap()));
            at += len;
        }
        assert_eq!(at, b.len());
        k
    }

    #[test]
    fn messages_are_well_formed() {
        assert_eq!(kinds(&new_bridge()), [RTM_NEWLINK]);
        assert_eq!(kinds(&set_up(3, Some(2))), [RTM_NEWLINK]);
        let v = new_veth("skv1234", 2, 9);
        assert_eq!(kinds(&v), [RTM_NEWLINK]);
        assert!(v.bytes().windows(5).any(|w| w == b"eth0\0"));
        let g = configure_guest(
            2,
            Ipv4Addr::new(10, 0, 2, 7),
            24,
            Ipv4Addr::new(10, 0, 2, 2),
        );
        assert_eq!(kinds(&g), [RTM_NEWLINK, RTM_NEWADDR, RTM_NEWROUTE]);
        assert!(g.bytes().windows(4).any(|w| w == [10, 0, 2, 7]));
    }

    #[test]
    fn a_bridge_and_a_veth_pair_in_a_new_namespace() {
        // Needs an unprivileged user namespace (skipped where there is none).
        let r = in_child("namespaces", || {
            // SAFETY: unshare in the forked child only.
            if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNET) } < 0 {
                return Err((100, 0));
            }
            send(&new_bridge()).map_err(|e| (1, e))?;
            let br = index_of(BRIDGE).map_err(|e| (2, e))?;
            // SAFETY: plain open of our own namespace file.
            let own = unsafe { libc::open(c"/proc/self/ns/net".as_ptr(), libc::O_RDONLY) };
            send(&new_veth("skvtest", br, own)).map_err(|e| (3, e))?;
            let eth = index_of(GUEST_IF).map_err(|e| (4, e))?;
            send(&configure_guest(
                eth,
                Ipv4Addr::new(10, 0, 2, 9),
                24,
                Ipv4Addr::new(10, 0, 2, 2),
            ))
            .map_err(|e| (5, e))?;
            Ok(())
        });
        match r {
            Err(Error::Helper(m)) if m.contains("step 100") => {}
            other => other.unwrap(),
        }
    }
}
