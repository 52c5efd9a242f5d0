//! The exported functions. Unsafe code is allowed in this module only: C
//! hands over raw pointers, and exported symbols need `#[unsafe(no_mangle)]`.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::Duration;

use lars_client::{ApiError, ClientConfig, LarsClient, Outcome};

/// The return code of every function: the agent's `LarsRetCode` (0..=3) or
/// a client error (negative). Functions return it as an `int32_t`; in C the
/// names are enum constants (safe in any expression, unlike `#define -1`).
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum lars_code_t {
    /// Success (`RET_SUCC`).
    LARS_RET_SUCC = 0,
    /// Every host of the key is overloaded (`RET_OVERLOAD`).
    LARS_RET_OVERLOAD = 1,
    /// The agent answered a system error, or a success without a valid host
    /// (`RET_SYSTEM_ERROR`).
    LARS_RET_SYSTEM_ERROR = 2,
    /// The key has no host (yet): the agent starts pulling it (`RET_NOEXIST`).
    LARS_RET_NOEXIST = 3,
    /// No matching reply from the agent within the receive timeout.
    LARS_ERR_TIMEOUT = -1,
    /// A socket error talking to the agent (e.g. nothing listens on its port).
    LARS_ERR_IO = -2,
    /// A bad argument: null pointer, negative id, ip text that is not a
    /// dotted IPv4 address, port outside 1..=65535, zero timeout or port
    /// count, report retcode other than 0 or 1. Nothing was sent.
    LARS_ERR_INVALID = -3,
    /// The library hit an internal error (a caught panic); the handle stays
    /// usable.
    LARS_ERR_PANIC = -4,
    /// The caller's buffer holds fewer hosts than the route has
    /// (`lars_get_route`: `*count` says how many there are; the first `cap`
    /// were written).
    LARS_ERR_BUFFER = -5,
}

// The codes as the functions return them.
const LARS_RET_SUCC: i32 = lars_code_t::LARS_RET_SUCC as i32;
const LARS_RET_OVERLOAD: i32 = lars_code_t::LARS_RET_OVERLOAD as i32;
const LARS_RET_SYSTEM_ERROR: i32 = lars_code_t::LARS_RET_SYSTEM_ERROR as i32;
const LARS_RET_NOEXIST: i32 = lars_code_t::LARS_RET_NOEXIST as i32;
const LARS_ERR_TIMEOUT: i32 = lars_code_t::LARS_ERR_TIMEOUT as i32;
const LARS_ERR_IO: i32 = lars_code_t::LARS_ERR_IO as i32;
const LARS_ERR_INVALID: i32 = lars_code_t::LARS_ERR_INVALID as i32;
const LARS_ERR_PANIC: i32 = lars_code_t::LARS_ERR_PANIC as i32;
const LARS_ERR_BUFFER: i32 = lars_code_t::LARS_ERR_BUFFER as i32;

/// The agent's default first UDP port (the original's 8888).
pub const LARS_DEFAULT_BASE_PORT: u16 = 8888;
/// The agent's default number of UDP ports (the original's 3).
pub const LARS_DEFAULT_PORT_COUNT: u16 = 3;
/// The default receive timeout of a request, in milliseconds.
pub const LARS_DEFAULT_TIMEOUT_MS: u32 = 50;
/// Size of [`lars_host_t::ip`]: "255.255.255.255" and its NUL.
pub const LARS_IP_LEN: usize = 16;

/// A connection to the local lars agent (opaque). Create with
/// [`lars_client_new`], release with [`lars_client_free`].
#[allow(non_camel_case_types)]
#[derive(Debug)]
pub struct lars_client_t {
    inner: LarsClient,
}

/// One host: NUL-terminated dotted IPv4 text and a port.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct lars_host_t {
    /// Dotted IPv4 address, NUL-terminated.
    pub ip: [c_char; LARS_IP_LEN],
    /// The port.
    pub port: u16,
}

/// Runs `f`, turning a panic into [`LARS_ERR_PANIC`].
fn guard(f: impl FnOnce() -> i32) -> i32 {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or(LARS_ERR_PANIC)
}

fn code(e: &ApiError) -> i32 {
    match e {
        ApiError::Overload => LARS_RET_OVERLOAD,
        ApiError::NoExist => LARS_RET_NOEXIST,
        ApiError::Timeout => LARS_ERR_TIMEOUT,
        ApiError::Io(_) => LARS_ERR_IO,
        _ => LARS_RET_SYSTEM_ERROR,
    }
}

/// The ids as the Rust client takes them; negative ids are invalid.
fn key(modid: i32, cmdid: i32) -> Option<(u32, u32)> {
    Some((u32::try_from(modid).ok()?, u32::try_from(cmdid).ok()?))
}

/// The NUL-terminated text at `p` as a dotted IPv4 address.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string.
unsafe fn parse_ip(p: *const c_char) -> Option<Ipv4Addr> {
    if p.is_null() {
        return None;
    }
    // SAFETY: non-null and NUL-terminated by the caller's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().ok()?.parse().ok()
}

fn host_of(addr: SocketAddrV4) -> lars_host_t {
    let mut h = lars_host_t {
        ip: [0; LARS_IP_LEN],
        port: addr.port(),
    };
    let text = addr.ip().to_string();
    // At most 15 bytes ("255.255.255.255"), so the last byte stays NUL.
    for (dst, b) in h.ip.iter_mut().zip(text.bytes().take(LARS_IP_LEN - 1)) {
        *dst = b as c_char;
    }
    h
}

/// The client behind `client`, if it is not null.
///
/// # Safety
/// `client` is null or a live handle from [`lars_client_new`].
unsafe fn handle<'a>(client: *const lars_client_t) -> Option<&'a LarsClient> {
    // SAFETY: by the caller's contract a non-null pointer is a live handle.
    unsafe { client.as_ref() }.map(|c| &c.inner)
}

/// Opens a client of the agent at `agent_ip` (dotted IPv4 text; NULL means
/// "127.0.0.1"), ports `base_port .. base_port + port_count`, with a receive
/// timeout of `timeout_ms` per request. On success stores the handle in
/// `*out` and returns [`LARS_RET_SUCC`]; otherwise `*out` is set to NULL (when
/// `out` is not NULL) and the result is [`LARS_ERR_INVALID`] (bad argument)
/// or [`LARS_ERR_IO`] (the sockets could not be opened).
///
/// # Safety
/// `agent_ip` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lars_client_new(
    agent_ip: *const c_char,
    base_port: u16,
    port_count: u16,
    timeout_ms: u32,
    out: *mut *mut lars_client_t,
) -> i32 {
    guard(|| {
        if out.is_null() {
            return LARS_ERR_INVALID;
        }
        // SAFETY: `out` is non-null and writable by the caller's contract.
        unsafe { out.write(std::ptr::null_mut()) };
        let ip = if agent_ip.is_null() {
            Ipv4Addr::LOCALHOST
        } else {
            // SAFETY: non-null and NUL-terminated by the caller's contract.
            match unsafe { parse_ip(agent_ip) } {
                Some(ip) => ip,
                None => return LARS_ERR_INVALID,
            }
        };
        let Ok(config) = ClientConfig::builder()
            .agent_ip(ip)
            .base_port(base_port)
            .port_count(port_count)
            .timeout(Duration::from_millis(u64::from(timeout_ms)))
            .build()
        else {
            return LARS_ERR_INVALID;
        };
        match LarsClient::connect(&config) {
            Ok(inner) => {
                let raw = Box::into_raw(Box::new(lars_client_t { inner }));
                // SAFETY: as above.
                unsafe { out.write(raw) };
                LARS_RET_SUCC
            }
            Err(_) => LARS_ERR_IO,
        }
    })
}

/// Closes the client's sockets and frees it. NULL is ignored.
///
/// # Safety
/// `client` is NULL or a handle from [`lars_client_new`] not freed before and
/// not in use by another thread.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lars_client_free(client: *mut lars_client_t) {
    guard(|| {
        if !client.is_null() {
            // SAFETY: a live handle made by Box::into_raw, freed only here.
            drop(unsafe { Box::from_raw(client) });
        }
        LARS_RET_SUCC
    });
}

/// Registers interest in `(modid, cmdid)` before first use, like the
/// original: asks for the route up to 3 times, 50 ms apart, until it has
/// hosts. [`LARS_RET_SUCC`] when hosts came, [`LARS_RET_NOEXIST`] when the
/// route stayed empty, [`LARS_ERR_TIMEOUT`] when the agent never answered.
///
/// # Safety
/// `client` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lars_reg_init(
    client: *const lars_client_t,
    modid: i32,
    cmdid: i32,
) -> i32 {
    guard(|| {
        // SAFETY: caller's contract.
        let (Some(c), Some((m, k))) = (unsafe { handle(client) }, key(modid, cmdid)) else {
            return LARS_ERR_INVALID;
        };
        match c.reg_init(m, k) {
            Ok(_) => LARS_RET_SUCC,
            Err(e) => code(&e),
        }
    })
}

/// Asks the agent for one host of `(modid, cmdid)` and writes it to `*host`.
/// [`LARS_RET_SUCC`], or [`LARS_RET_OVERLOAD`], [`LARS_RET_NOEXIST`] (first
/// request of a key: call [`lars_reg_init`] first), [`LARS_RET_SYSTEM_ERROR`],
/// [`LARS_ERR_TIMEOUT`], [`LARS_ERR_IO`], [`LARS_ERR_INVALID`].
///
/// # Safety
/// `client` is NULL or a live handle; `host` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lars_get_host(
    client: *const lars_client_t,
    modid: i32,
    cmdid: i32,
    host: *mut lars_host_t,
) -> i32 {
    guard(|| {
        // SAFETY: caller's contract.
        let (Some(c), Some((m, k))) = (unsafe { handle(client) }, key(modid, cmdid)) else {
            return LARS_ERR_INVALID;
        };
        if host.is_null() {
            return LARS_ERR_INVALID;
        }
        match c.get_host(m, k) {
            Ok(addr) => {
                // SAFETY: non-null and writable by the caller's contract.
                unsafe { host.write(host_of(addr)) };
                LARS_RET_SUCC
            }
            Err(e) => code(&e),
        }
    })
}

/// Asks the agent for every host of `(modid, cmdid)`. Writes the first `cap`
/// of them to `hosts` and their total number to `*count`. [`LARS_RET_SUCC`]
/// (an empty route is a valid answer: the agent starts pulling the key),
/// [`LARS_ERR_BUFFER`] when `cap` is smaller than the route, or an error code.
/// `hosts` may be NULL when `cap` is 0.
///
/// # Safety
/// `client` is NULL or a live handle; `hosts` is NULL or has room for `cap`
/// hosts; `count` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lars_get_route(
    client: *const lars_client_t,
    modid: i32,
    cmdid: i32,
    hosts: *mut lars_host_t,
    cap: usize,
    count: *mut usize,
) -> i32 {
    guard(|| {
        // SAFETY: caller's contract.
        let (Some(c), Some((m, k))) = (unsafe { handle(client) }, key(modid, cmdid)) else {
            return LARS_ERR_INVALID;
        };
        if count.is_null() || (hosts.is_null() && cap > 0) {
            return LARS_ERR_INVALID;
        }
        // SAFETY: non-null and writable by the caller's contract.
        unsafe { count.write(0) };
        match c.get_route(m, k) {
            Ok(route) => {
                for (i, addr) in route.iter().take(cap).enumerate() {
                    // SAFETY: i < cap and `hosts` has room for `cap` hosts.
                    unsafe { hosts.add(i).write(host_of(*addr)) };
                }
                // SAFETY: as above.
                unsafe { count.write(route.len()) };
                if route.len() > cap {
                    LARS_ERR_BUFFER
                } else {
                    LARS_RET_SUCC
                }
            }
            Err(e) => code(&e),
        }
    })
}

/// The checked arguments of a report.
///
/// # Safety
/// `ip` is NULL or a NUL-terminated string.
unsafe fn report_args(
    modid: i32,
    cmdid: i32,
    ip: *const c_char,
    port: i32,
    retcode: i32,
) -> Option<(u32, u32, SocketAddrV4, Outcome)> {
    let (m, k) = key(modid, cmdid)?;
    // SAFETY: caller's contract.
    let ip = unsafe { parse_ip(ip) }?;
    let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
    let outcome = match retcode {
        0 => Outcome::Success,
        1 => Outcome::Failure,
        _ => return None,
    };
    Some((m, k, SocketAddrV4::new(ip, port), outcome))
}

fn send_report(
    client: Option<&LarsClient>,
    args: Option<(u32, u32, SocketAddrV4, Outcome)>,
    latency: Option<Duration>,
) -> i32 {
    let (Some(c), Some((m, k, host, outcome))) = (client, args) else {
        return LARS_ERR_INVALID;
    };
    match c.report(m, k, host, outcome, latency) {
        Ok(()) => LARS_RET_SUCC,
        Err(e) => code(&e),
    }
}

/// Tells the agent how a call to `ip:port` went: `retcode` 0 for success, 1
/// for failure (the original's values). No latency is sent (timecost 0,
/// neutral for the agent's latency estimate). Nothing is awaited.
/// [`LARS_RET_SUCC`] when sent, [`LARS_ERR_INVALID`], [`LARS_ERR_IO`].
///
/// # Safety
/// `client` is NULL or a live handle; `ip` is NULL or a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lars_report(
    client: *const lars_client_t,
    modid: i32,
    cmdid: i32,
    ip: *const c_char,
    port: i32,
    retcode: i32,
) -> i32 {
    guard(|| {
        // SAFETY: caller's contract.
        let (c, args) = unsafe { (handle(client), report_args(modid, cmdid, ip, port, retcode)) };
        send_report(c, args, None)
    })
}

/// [`lars_report`] with the call's latency: `latency_ms` travels as the
/// report's timecost (a latency under 1 ms is sent as 1: 0 means unknown).
///
/// # Safety
/// As [`lars_report`].
#[unsafe(no_mangle)]
pub unsafe extern "C" fn lars_report_latency(
    client: *const lars_client_t,
    modid: i32,
    cmdid: i32,
    ip: *const c_char,
    port: i32,
    retcode: i32,
    latency_ms: u32,
) -> i32 {
    guard(|| {
        // SAFETY: caller's contract.
        let (c, args) = unsafe { (handle(client), report_args(modid, cmdid, ip, port, retcode)) };
        send_report(c, args, Some(Duration::from_millis(u64::from(latency_ms))))
    })
}

/// A static, NUL-terminated description of a return code (never NULL).
#[unsafe(no_mangle)]
pub extern "C" fn lars_strerror(code: i32) -> *const c_char {
    let s: &'static CStr = match code {
        LARS_RET_SUCC => c"success",
        LARS_RET_OVERLOAD => c"every host is overloaded",
        LARS_RET_SYSTEM_ERROR => c"agent system error",
        LARS_RET_NOEXIST => c"no host exists for this key (yet)",
        LARS_ERR_TIMEOUT => c"no reply from the agent within the timeout",
        LARS_ERR_IO => c"socket error talking to the agent",
        LARS_ERR_INVALID => c"invalid argument",
        LARS_ERR_PANIC => c"internal error in liblars",
        LARS_ERR_BUFFER => c"the host buffer is too small for the route",
        _ => c"unknown lars return code",
    };
    s.as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::ptr::{null, null_mut};
    use std::time::Instant;

    fn text(h: &lars_host_t) -> String {
        // SAFETY: host_of always leaves a NUL in the last byte.
        unsafe { CStr::from_ptr(h.ip.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    /// A client of a "stalled agent": a bound socket that never answers.
    fn stalled(timeout_ms: u32) -> (UdpSocket, *mut lars_client_t) {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = sock.local_addr().unwrap().port();
        let mut c = null_mut();
        let rc = unsafe { lars_client_new(c"127.0.0.1".as_ptr(), port, 1, timeout_ms, &mut c) };
        assert_eq!(rc, LARS_RET_SUCC);
        assert!(!c.is_null());
        (sock, c)
    }

    #[test]
    fn new_rejects_bad_arguments_and_clears_out() {
        // Not null, so the test sees that a failure clears it.
        let mut c: *mut lars_client_t = std::ptr::NonNull::dangling().as_ptr();
        for (ip, base, count, timeout) in [
            (c"10.0.0".as_ptr(), 9000, 3, 50),
            (c"not an ip".as_ptr(), 9000, 3, 50),
            (c"\xff\xfe".as_ptr(), 9000, 3, 50),
            (null(), 0, 3, 50),
            (null(), 65_535, 2, 50),
            (null(), 9000, 0, 50),
            (null(), 9000, 3, 0),
        ] {
            let rc = unsafe { lars_client_new(ip, base, count, timeout, &mut c) };
            assert_eq!(rc, LARS_ERR_INVALID);
            assert!(c.is_null());
        }
        let rc = unsafe { lars_client_new(null(), 9000, 3, 50, null_mut()) };
        assert_eq!(rc, LARS_ERR_INVALID);
    }

    #[test]
    fn null_handles_and_bad_input_fail_without_waiting() {
        // A 5 s timeout: any request that reached the network would wait it.
        let (_agent, c) = stalled(5_000);
        let mut h = lars_host_t {
            ip: [0; LARS_IP_LEN],
            port: 0,
        };
        let mut n = 7usize;
        let start = Instant::now();
        unsafe {
            assert_eq!(lars_get_host(null(), 1, 1, &mut h), LARS_ERR_INVALID);
            assert_eq!(lars_get_host(c, -1, 1, &mut h), LARS_ERR_INVALID);
            assert_eq!(lars_get_host(c, 1, -1, &mut h), LARS_ERR_INVALID);
            assert_eq!(lars_get_host(c, 1, 1, null_mut()), LARS_ERR_INVALID);
            assert_eq!(lars_reg_init(null(), 1, 1), LARS_ERR_INVALID);
            assert_eq!(lars_reg_init(c, i32::MIN, 1), LARS_ERR_INVALID);
            assert_eq!(
                lars_get_route(c, 1, 1, null_mut(), 4, &mut n),
                LARS_ERR_INVALID
            );
            assert_eq!(
                lars_get_route(c, 1, 1, &mut h, 1, null_mut()),
                LARS_ERR_INVALID
            );
            assert_eq!(
                lars_get_route(c, -5, 1, &mut h, 1, &mut n),
                LARS_ERR_INVALID
            );
            let ip = c"10.0.0.1".as_ptr();
            assert_eq!(
                lars_report(c, 1, 1, c"10.0.0".as_ptr(), 80, 0),
                LARS_ERR_INVALID
            );
            assert_eq!(
                lars_report(c, 1, 1, c"\xff".as_ptr(), 80, 0),
                LARS_ERR_INVALID
            );
            assert_eq!(lars_report(c, 1, 1, null(), 80, 0), LARS_ERR_INVALID);
            assert_eq!(lars_report(c, 1, 1, ip, 0, 0), LARS_ERR_INVALID);
            assert_eq!(lars_report(c, 1, 1, ip, 65_536, 0), LARS_ERR_INVALID);
            assert_eq!(lars_report(c, 1, 1, ip, 80, 2), LARS_ERR_INVALID);
            assert_eq!(lars_report(c, -1, 1, ip, 80, 0), LARS_ERR_INVALID);
            assert_eq!(lars_report(null(), 1, 1, ip, 80, 0), LARS_ERR_INVALID);
            assert_eq!(
                lars_report_latency(c, 1, -1, ip, 80, 0, 3),
                LARS_ERR_INVALID
            );
            assert_eq!(lars_report_latency(c, 1, 1, ip, 80, 1, 3), LARS_RET_SUCC);
            lars_client_free(null_mut());
        }
        // Nothing above waited for an answer.
        assert!(start.elapsed() < Duration::from_millis(2_500));
        unsafe { lars_client_free(c) };
    }

    #[test]
    fn a_stalled_agent_times_out() {
        let (_agent, c) = stalled(50);
        let mut h = lars_host_t {
            ip: [0; LARS_IP_LEN],
            port: 0,
        };
        let mut n = 0usize;
        unsafe {
            assert_eq!(lars_get_host(c, 1, 1, &mut h), LARS_ERR_TIMEOUT);
            assert_eq!(lars_get_route(c, 1, 1, &mut h, 1, &mut n), LARS_ERR_TIMEOUT);
            assert_eq!(n, 0);
            lars_client_free(c);
        }
    }

    #[test]
    fn hosts_are_dotted_text() {
        let h = host_of("255.255.255.255:65535".parse().unwrap());
        assert_eq!(text(&h), "255.255.255.255");
        assert_eq!(h.port, 65_535);
        assert_eq!(h.ip[LARS_IP_LEN - 1], 0);
        assert_eq!(text(&host_of("1.2.3.4:5".parse().unwrap())), "1.2.3.4");
    }

    #[test]
    fn a_panic_is_a_code() {
        assert_eq!(guard(|| panic!("boom")), LARS_ERR_PANIC);
    }

    #[test]
    fn every_code_has_a_text() {
        for code in -5..=3 {
            let s = unsafe { CStr::from_ptr(lars_strerror(code)) };
            assert_ne!(s.to_str().unwrap(), "unknown lars return code", "{code}");
        }
        let s = unsafe { CStr::from_ptr(lars_strerror(99)) };
        assert_eq!(s.to_str().unwrap(), "unknown lars return code");
    }
}
