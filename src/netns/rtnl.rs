//! The policy routing that lets the port relay keep a client's address (see
//! [`super::forward`]): the relay's socket in the container's namespace is transparent
//! (`IP_TRANSPARENT`) and bound to the client's address, so the container's server
//! answers a foreign address; these rules loop those answers back to the relay's socket
//! instead of sending them out of the namespace:
//!
//! ```text
//! ip rule add pref 100 iif lo ipproto tcp sport P[-Q] lookup 1953   (one per port run)
//! ip route add local 0.0.0.0/0 dev lo table 1953
//! ```
//!
//! `iif lo` matches locally generated packets only (an output route lookup has the
//! loopback as its input interface), so packets arriving from the network are routed as
//! before; the rule's priority puts it after the `local` table's, so local destinations
//! are untouched. The messages are built here, in the monitor, and sent by the connector
//! child inside the namespace ([`send`] allocates nothing: it runs after a fork).

use std::os::fd::RawFd;

/// The routing table of the looped-back answers.
pub const TABLE: u32 = 1953;
/// The priority of the rules (after `local`'s 0, before `main`'s 32766).
pub const PRIORITY: u32 = 100;

const NLMSG_HDRLEN: usize = 16;
pub(super) const RTM_NEWROUTE: u16 = 24;
const RTM_NEWRULE: u16 = 32;
pub(super) const NLM_F_REQUEST: u16 = 0x1;
pub(super) const NLM_F_ACK: u16 = 0x4;
pub(super) const NLM_F_EXCL: u16 = 0x200;
pub(super) const NLM_F_CREATE: u16 = 0x400;
const NLMSG_ERROR: u16 = 2;
// fib rule attributes (linux/fib_rules.h).
const FRA_IIFNAME: u16 = 3;
const FRA_PRIORITY: u16 = 6;
const FRA_TABLE: u16 = 15;
const FRA_IP_PROTO: u16 = 22;
const FRA_SPORT_RANGE: u16 = 23;
const FR_ACT_TO_TBL: u8 = 1;
// route attributes and values (linux/rtnetlink.h).
pub(super) const RTA_OIF: u16 = 4;
const RTA_TABLE: u16 = 15;
const RTN_LOCAL: u8 = 2;
const RT_SCOPE_HOST: u8 = 254;
pub(super) const RTPROT_STATIC: u8 = 4;
/// The loopback's index: always 1 in a network namespace.
const LOOPBACK_INDEX: u32 = 1;

/// Netlink requests, one after the other in one buffer (sent as one datagram).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Requests {
    buf: Vec<u8>,
    count: usize,
}

impl Requests {
    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        &self.buf
    }

    /// How many requests (and so acknowledgements) there are.
    pub fn count(&self) -> usize {
        self.count
    }

    fn push(&mut self, kind: u16, header: &[u8], attrs: &[(u16, &[u8])]) {
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        self.push_flags(kind, flags, header, attrs);
    }

    /// Appends a request of type `kind` with the netlink `flags`, the fixed `header` and
    /// the (already encoded, for nested ones) attributes.
    pub fn push_flags(&mut self, kind: u16, flags: u16, header: &[u8], attrs: &[(u16, &[u8])]) {
        let start = self.buf.len();
        self.buf.extend_from_slice(&[0; NLMSG_HDRLEN]);
        self.buf.extend_from_slice(header);
        for (ty, data) in attrs {
            put_attr(&mut self.buf, *ty, data);
        }
        self.count += 1;
        let len = (self.buf.len() - start) as u32;
        let seq = self.count as u32;
        let hdr = &mut self.buf[start..start + NLMSG_HDRLEN];
        hdr[0..4].copy_from_slice(&len.to_ne_bytes());
        hdr[4..6].copy_from_slice(&kind.to_ne_bytes());
        hdr[6..8].copy_from_slice(&flags.to_ne_bytes());
        hdr[8..12].copy_from_slice(&seq.to_ne_bytes());
        // nlmsg_pid 0: the kernel.
    }
}

/// Appends one netlink attribute (`struct nlattr` and `data`), padded to 4 bytes.
pub(super) fn put_attr(buf: &mut Vec<u8>, ty: u16, data: &[u8]) {
    buf.extend_from_slice(&((4 + data.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&ty.to_ne_bytes());
    buf.extend_from_slice(data);
    while !buf.len().is_multiple_of(4) {
        buf.push(0);
    }
}

/// The rules and the route for the TCP container ports `ports` (IPv4; runs of
/// consecutive ports share a rule). Empty for no port.
pub fn loop_back_requests(ports: &[u16]) -> Requests {
    let mut sorted = ports.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut runs: Vec<(u16, u16)> = Vec::new();
    for p in sorted {
        match runs.last_mut() {
            Some((_, end)) if u32::from(*end) + 1 == u32::from(p) => *end = p,
            _ => runs.push((p, p)),
        }
    }
    let mut req = Requests::default();
    if runs.is_empty() {
        return req;
    }
    let af = libc::AF_INET as u8;
    for (first, last) in runs {
        // struct fib_rule_hdr: family, dst_len, src_len, tos, table, res1, res2, action,
        // flags.
        let hdr = [af, 0, 0, 0, 0, 0, 0, FR_ACT_TO_TBL, 0, 0, 0, 0];
        let mut range = [0u8; 4];
        range[0..2].copy_from_slice(&first.to_ne_bytes());
        range[2..4].copy_from_slice(&last.to_ne_bytes());
        req.push(
            RTM_NEWRULE,
            &hdr,
            &[
                (FRA_PRIORITY, &PRIORITY.to_ne_bytes()),
                (FRA_TABLE, &TABLE.to_ne_bytes()),
                (FRA_IIFNAME, b"lo\0"),
                (FRA_IP_PROTO, &[libc::IPPROTO_TCP as u8]),
                (FRA_SPORT_RANGE, &range),
            ],
        );
    }
    // struct rtmsg: family, dst_len, src_len, tos, table, protocol, scope, type, flags.
    let hdr = [
        af,
        0,
        0,
        0,
        0,
        RTPROT_STATIC,
        RT_SCOPE_HOST,
        RTN_LOCAL,
        0,
        0,
        0,
        0,
    ];
    req.push(
        RTM_NEWROUTE,
        &hdr,
        &[
            (RTA_TABLE, &TABLE.to_ne_bytes()),
            (RTA_OIF, &LOOPBACK_INDEX.to_ne_bytes()),
        ],
    );
    req
}

/// Sends `bytes` (holding `count` requests) on a new NETLINK_ROUTE socket of the current
/// network namespace and waits for every acknowledgement. Returns 0, or the first
/// failure's errno (EEXIST counts as success: the rules of an earlier connector of the
/// same container are still there).
///
/// # Safety
/// None beyond the system calls' own: it allocates nothing and may run after a fork.
pub unsafe fn send(bytes: &[u8], count: usize) -> i32 {
    send_with(bytes, count, true)
}

/// [`send`], where EEXIST is a failure too (a link or address that must be new).
///
/// # Safety
/// As [`send`].
pub unsafe fn send_strict(bytes: &[u8], count: usize) -> i32 {
    send_with(bytes, count, false)
}

unsafe fn send_with(bytes: &[u8], count: usize, eexist_ok: bool) -> i32 {
    let fd = libc::socket(
        libc::AF_NETLINK,
        libc::SOCK_RAW | libc::SOCK_CLOEXEC,
        libc::NETLINK_ROUTE,
    );
    if fd < 0 {
        return errno();
    }
    let r = exchange(fd, bytes, count, eexist_ok);
    libc::close(fd);
    r
}

unsafe fn exchange(fd: RawFd, bytes: &[u8], count: usize, eexist_ok: bool) -> i32 {
    // SAFETY (of the whole function): sockaddr_nl is plain data; the buffers are ours.
    let mut sa: libc::sockaddr_nl = std::mem::zeroed();
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    let sent = libc::sendto(
        fd,
        bytes.as_ptr().cast(),
        bytes.len(),
        0,
        (&sa as *const libc::sockaddr_nl).cast(),
        std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
    );
    if sent < 0 {
        return errno();
    }
    let mut acked = 0;
    let mut buf = [0u8; 8192];
    while acked < count {
        let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
        if n < 0 {
            if errno() == libc::EINTR {
                continue;
            }
            return errno();
        }
        match first_error(&buf[..n as usize], &mut acked, eexist_ok) {
            0 => {}
            e => return e,
        }
    }
    0
}

/// Counts the acknowledgements in a reply into `acked`; the first error's errno, or 0.
fn first_error(mut reply: &[u8], acked: &mut usize, eexist_ok: bool) -> i32 {
    while reply.len() >= NLMSG_HDRLEN + 4 {
        let len = u32::from_ne_bytes([reply[0], reply[1], reply[2], reply[3]]) as usize;
        let kind = u16::from_ne_bytes([reply[4], reply[5]]);
        if len < NLMSG_HDRLEN || len > reply.len() {
            return libc::EPROTO;
        }
        if kind == NLMSG_ERROR {
            let b = &reply[NLMSG_HDRLEN..NLMSG_HDRLEN + 4];
            let err = -i32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
            *acked += 1;
            if err != 0 && !(eexist_ok && err == libc::EEXIST) {
                return err;
            }
        }
        let step = (len + 3) & !3;
        reply = &reply[step.min(reply.len())..];
    }
    0
}

fn errno() -> i32 {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consecutive_ports_share_a_rule_and_one_route_follows() {
        let r = loop_back_requests(&[81, 80, 443, 82, 80]);
        // Rules for 80-82 and 443, then the route.
        assert_eq!(r.count(), 3);
        let b = r.bytes();
        let mut kinds = Vec::new();
        let mut at = 0;
        while at < b.len() {
            let len = u32::from_ne_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            kinds.push(u16::from_ne_bytes(b[at + 4..at + 6].try_into().unwrap()));
            assert!(len.is_multiple_of(4));
            at += len;
        }
        assert_eq!(at, b.len());
        assert_eq!(kinds, [RTM_NEWRULE, RTM_NEWRULE, RTM_NEWROUTE]);
        // The first rule's port range: 80-82.
        let range = [80u16.to_ne_bytes(), 82u16.to_ne_bytes()].concat();
        assert!(b.windows(4).any(|w| w == range.as_slice()));
        assert_eq!(loop_back_requests(&[]).count(), 0);
    }

    #[test]
    fn errors_in_a_reply_are_found_and_eexist_is_fine() {
        let ack = |err: i32| {
            let mut m = vec![0u8; NLMSG_HDRLEN + 4];
            m[0..4].copy_from_slice(&((NLMSG_HDRLEN + 4) as u32).to_ne_bytes());
            m[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
            m[NLMSG_HDRLEN..].copy_from_slice(&(-err).to_ne_bytes());
            m
        };
        let mut acked = 0;
        let reply = [ack(0), ack(libc::EEXIST)].concat();
        assert_eq!(first_error(&reply, &mut acked, true), 0);
        assert_eq!(acked, 2);
        assert_eq!(
            first_error(&ack(libc::EPERM), &mut acked, true),
            libc::EPERM
        );
        assert_eq!(
            first_error(&ack(libc::EEXIST), &mut acked, false),
            libc::EEXIST
        );
    }
}
