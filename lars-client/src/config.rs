//! Where the agent is and how long to wait for it.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

/// The agent's first UDP port in the original deployment.
pub const DEFAULT_BASE_PORT: u16 = 8888;
/// How many UDP ports the original agent listens on (8888, 8889, 8890).
pub const DEFAULT_PORT_COUNT: u16 = 3;
/// Default receive timeout of one request.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// A validated client configuration: the agent's IP, its port layout
/// (`base_port .. base_port + port_count`) and the per-request receive timeout.
///
/// Built by [`ClientConfig::builder`]; `ClientConfig::default()` is the
/// original deployment: `127.0.0.1`, ports 8888..=8890, 50 ms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    agent_ip: Ipv4Addr,
    base_port: u16,
    port_count: u16,
    timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            agent_ip: Ipv4Addr::LOCALHOST,
            base_port: DEFAULT_BASE_PORT,
            port_count: DEFAULT_PORT_COUNT,
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl ClientConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> ClientConfigBuilder {
        ClientConfigBuilder {
            config: Self::default(),
        }
    }

    /// The agent's IPv4 address.
    pub fn agent_ip(&self) -> Ipv4Addr {
        self.agent_ip
    }

    /// The agent's first UDP port.
    pub fn base_port(&self) -> u16 {
        self.base_port
    }

    /// How many consecutive UDP ports the agent listens on.
    pub fn port_count(&self) -> u16 {
        self.port_count
    }

    /// The receive timeout of one request.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The index of the agent port serving `(modid, cmdid)`:
    /// `(modid + cmdid) % port_count`, the mapping existing clients rely on.
    pub fn port_index(&self, modid: u32, cmdid: u32) -> usize {
        // u64 sum: no overflow for any pair of u32 ids.
        ((u64::from(modid) + u64::from(cmdid)) % u64::from(self.port_count)) as usize
    }

    /// The agent address serving `(modid, cmdid)`.
    pub fn agent_addr(&self, modid: u32, cmdid: u32) -> SocketAddrV4 {
        self.agent_addrs()[self.port_index(modid, cmdid)]
    }

    /// Every agent address, in port order.
    pub fn agent_addrs(&self) -> Vec<SocketAddrV4> {
        // build() checked that base_port + port_count - 1 fits in a u16.
        (0..self.port_count)
            .map(|i| SocketAddrV4::new(self.agent_ip, self.base_port + i))
            .collect()
    }
}

/// Builds a [`ClientConfig`], checking it once in [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct ClientConfigBuilder {
    config: ClientConfig,
}

impl ClientConfigBuilder {
    /// The agent's IPv4 address (default `127.0.0.1`).
    pub fn agent_ip(mut self, ip: Ipv4Addr) -> Self {
        self.config.agent_ip = ip;
        self
    }

    /// The agent's first UDP port (default 8888).
    pub fn base_port(mut self, port: u16) -> Self {
        self.config.base_port = port;
        self
    }

    /// How many consecutive UDP ports the agent listens on (default 3).
    pub fn port_count(mut self, count: u16) -> Self {
        self.config.port_count = count;
        self
    }

    /// The receive timeout of one request (default 50 ms).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Checks the configuration.
    pub fn build(self) -> Result<ClientConfig, ConfigError> {
        let c = self.config;
        if c.port_count == 0 {
            return Err(ConfigError::NoPorts);
        }
        if c.base_port == 0 || u32::from(c.base_port) + u32::from(c.port_count) - 1 > 65_535 {
            return Err(ConfigError::PortRange {
                base_port: c.base_port,
                port_count: c.port_count,
            });
        }
        if c.timeout.is_zero() {
            return Err(ConfigError::ZeroTimeout);
        }
        Ok(c)
    }
}

/// Why a [`ClientConfigBuilder`] was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// `port_count` is 0.
    #[error("the agent port count must be at least 1")]
    NoPorts,
    /// The ports do not fit in 1..=65535.
    #[error("agent ports {base_port}..{base_port}+{port_count} do not fit in 1..=65535")]
    PortRange {
        /// The first port.
        base_port: u16,
        /// How many ports.
        port_count: u16,
    },
    /// A zero timeout would mean "block forever" to the socket layer.
    #[error("the receive timeout must be greater than zero")]
    ZeroTimeout,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_original_deployment() {
        let c = ClientConfig::default();
        assert_eq!(
            c.agent_addrs(),
            vec![
                "127.0.0.1:8888".parse().unwrap(),
                "127.0.0.1:8889".parse().unwrap(),
                "127.0.0.1:8890".parse().unwrap(),
            ]
        );
        assert_eq!(c.timeout(), Duration::from_millis(50));
        assert_eq!(ClientConfig::builder().build(), Ok(c));
    }

    #[test]
    fn port_mapping_is_modid_plus_cmdid_mod_count() {
        let c = ClientConfig::default();
        assert_eq!(c.agent_addr(1, 1).port(), 8890);
        assert_eq!(c.agent_addr(2, 1).port(), 8888);
        assert_eq!(c.agent_addr(3, 1).port(), 8889);
        assert_eq!(
            c.port_index(u32::MAX, u32::MAX),
            ((2 * u64::from(u32::MAX)) % 3) as usize
        );
    }

    #[test]
    fn bad_values_are_rejected_once() {
        let b = ClientConfig::builder;
        assert_eq!(b().port_count(0).build(), Err(ConfigError::NoPorts));
        assert!(matches!(
            b().base_port(65_535).port_count(2).build(),
            Err(ConfigError::PortRange { .. })
        ));
        assert!(b().base_port(65_535).port_count(1).build().is_ok());
        assert!(matches!(
            b().base_port(0).build(),
            Err(ConfigError::PortRange { .. })
        ));
        assert_eq!(
            b().timeout(Duration::ZERO).build(),
            Err(ConfigError::ZeroTimeout)
        );
    }
}
