//! Domain types: the key of a service, the address of a host, message ids and
//! return codes.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use crate::proto;

/// A service, named by its module id and command id: the key every lars lookup
/// is made by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModKey {
    /// Module id.
    pub modid: u32,
    /// Command id within the module.
    pub cmdid: u32,
}

impl ModKey {
    /// A key from its two ids.
    pub const fn new(modid: u32, cmdid: u32) -> Self {
        Self { modid, cmdid }
    }

    /// The original's packing: `modid << 32 | cmdid`.
    pub const fn packed(self) -> u64 {
        ((self.modid as u64) << 32) | self.cmdid as u64
    }

    /// The inverse of [`ModKey::packed`].
    pub const fn from_packed(v: u64) -> Self {
        Self {
            modid: (v >> 32) as u32,
            cmdid: v as u32,
        }
    }

    /// A key from the wire's int32 fields (same 32 bits, no conversion).
    pub const fn from_wire(modid: i32, cmdid: i32) -> Self {
        Self {
            modid: modid as u32,
            cmdid: cmdid as u32,
        }
    }

    /// The wire's int32 fields `(modid, cmdid)`.
    pub const fn to_wire(self) -> (i32, i32) {
        (self.modid as i32, self.cmdid as i32)
    }
}

impl fmt::Display for ModKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.modid, self.cmdid)
    }
}

/// One host of a service: an IPv4 address held as the original's 32-bit
/// host-order integer, and a port.
///
/// `3232235953` is `192.168.1.177`; on the wire the same 32 bits travel in an
/// int32 field, never byte-swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostAddr {
    /// IPv4 address, host order (`a.b.c.d` is `a << 24 | b << 16 | c << 8 | d`).
    pub ip: u32,
    /// TCP/UDP port.
    pub port: u16,
}

impl HostAddr {
    /// A host from its integer address and port.
    pub const fn new(ip: u32, port: u16) -> Self {
        Self { ip, port }
    }

    /// The address as an [`Ipv4Addr`].
    pub const fn ipv4(self) -> Ipv4Addr {
        Ipv4Addr::from_bits(self.ip)
    }

    /// A host from the wire's int32 fields; `None` when the port does not fit
    /// in 1..=65535.
    pub fn from_wire(ip: i32, port: i32) -> Option<Self> {
        let port = u16::try_from(port).ok().filter(|p| *p != 0)?;
        Some(Self {
            ip: ip as u32,
            port,
        })
    }

    /// The wire's int32 fields `(ip, port)`.
    pub const fn to_wire(self) -> (i32, i32) {
        (self.ip as i32, self.port as i32)
    }

    /// A host from a protobuf [`proto::HostInfo`]; `None` for an invalid port.
    pub fn from_proto(h: &proto::HostInfo) -> Option<Self> {
        Self::from_wire(h.ip, h.port)
    }

    /// The protobuf [`proto::HostInfo`] of this host.
    pub fn to_proto(self) -> proto::HostInfo {
        let (ip, port) = self.to_wire();
        proto::HostInfo { ip, port }
    }
}

impl From<SocketAddrV4> for HostAddr {
    fn from(a: SocketAddrV4) -> Self {
        Self {
            ip: a.ip().to_bits(),
            port: a.port(),
        }
    }
}

impl From<HostAddr> for SocketAddrV4 {
    fn from(h: HostAddr) -> Self {
        SocketAddrV4::new(h.ipv4(), h.port)
    }
}

impl fmt::Display for HostAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.ipv4(), self.port)
    }
}

/// Why a text is not a `HostAddr`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid host address {0:?}: expected a.b.c.d:port with port 1-65535")]
pub struct AddrParseError(pub String);

impl FromStr for HostAddr {
    type Err = AddrParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let a: SocketAddrV4 = s.parse().map_err(|_| AddrParseError(s.to_owned()))?;
        if a.port() == 0 {
            return Err(AddrParseError(s.to_owned()));
        }
        Ok(a.into())
    }
}

/// The message ids of the frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum MessageId {
    /// agent -> dns: which hosts serve this key.
    GetRouteRequest = 1,
    /// dns -> agent: the hosts of a key (reply and push).
    GetRouteResponse = 2,
    /// agent -> reporter: per-host call counters.
    ReportStatusRequest = 3,
    /// api -> agent: pick a host.
    GetHostRequest = 4,
    /// agent -> api: the picked host.
    GetHostResponse = 5,
    /// api -> agent: the outcome of a call.
    ReportRequest = 6,
    /// api -> agent: all hosts of a key.
    ApiGetRouteRequest = 7,
    /// agent -> api: all hosts of a key.
    ApiGetRouteResponse = 8,
    /// Ours: agent -> dns, drop this connection's subscription to a key
    /// (body `GetRouteRequest`); an original dns skips it.
    UnsubscribeRoute = 101,
}

impl MessageId {
    /// The id for a frame header value, if known.
    pub const fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            1 => Self::GetRouteRequest,
            2 => Self::GetRouteResponse,
            3 => Self::ReportStatusRequest,
            4 => Self::GetHostRequest,
            5 => Self::GetHostResponse,
            6 => Self::ReportRequest,
            7 => Self::ApiGetRouteRequest,
            8 => Self::ApiGetRouteResponse,
            101 => Self::UnsubscribeRoute,
            _ => return None,
        })
    }
}

impl From<MessageId> for i32 {
    fn from(m: MessageId) -> i32 {
        m as i32
    }
}

/// The agent's return codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetCode {
    /// A host was picked.
    Succ = 0,
    /// Every host is overloaded and no probe is due.
    Overload = 1,
    /// The agent failed.
    SystemError = 2,
    /// The key is not known (yet): it is being pulled from the dns.
    NoExist = 3,
}

impl RetCode {
    /// The code for a wire value, if known.
    pub const fn from_i32(v: i32) -> Option<Self> {
        Some(match v {
            0 => Self::Succ,
            1 => Self::Overload,
            2 => Self::SystemError,
            3 => Self::NoExist,
            _ => return None,
        })
    }
}

impl From<RetCode> for i32 {
    fn from(r: RetCode) -> i32 {
        r as i32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_addr_matches_the_original_integer() {
        let h = HostAddr::new(3_232_235_953, 7777);
        assert_eq!(h.to_string(), "192.168.1.177:7777");
        assert_eq!("192.168.1.177:7777".parse::<HostAddr>(), Ok(h));
        let (ip, port) = h.to_wire();
        assert!(ip < 0, "the same 32 bits may be negative on the wire");
        assert_eq!(HostAddr::from_wire(ip, port), Some(h));
        let sa: SocketAddrV4 = h.into();
        assert_eq!(sa.to_string(), "192.168.1.177:7777");
        assert_eq!(HostAddr::from(sa), h);
    }

    #[test]
    fn invalid_ports_are_rejected() {
        assert_eq!(HostAddr::from_wire(1, 0), None);
        assert_eq!(HostAddr::from_wire(1, 65_536), None);
        assert_eq!(HostAddr::from_wire(1, -1), None);
        assert!("1.2.3.4:0".parse::<HostAddr>().is_err());
        assert!("1.2.3:80".parse::<HostAddr>().is_err());
    }

    #[test]
    fn mod_key_packs_like_the_original() {
        let k = ModKey::new(3, 7);
        assert_eq!(k.packed(), (3u64 << 32) | 7);
        assert_eq!(ModKey::from_packed(k.packed()), k);
        assert_eq!(ModKey::from_wire(-1, 2), ModKey::new(u32::MAX, 2));
    }

    #[test]
    fn ids_round_trip() {
        for v in 1..=8 {
            let m = MessageId::from_i32(v).unwrap();
            assert_eq!(i32::from(m), v);
        }
        assert_eq!(MessageId::from_i32(9), None);
        for v in 0..=3 {
            assert_eq!(i32::from(RetCode::from_i32(v).unwrap()), v);
        }
    }
}
