//! Routes: list them, show one key, and change a key's hosts. Every write is
//! one lars-store transaction that also writes a new `RouteVersion` and a
//! `RouteChange` row, and answers the new version.

use lars_core::{HostAddr, ModKey};
use lars_store::{
    DescKind, Descriptions, RouteAdmin, RouteFilter, RouteRead, RouteRow, StoreError,
};

use super::Console;
use crate::error::ConsoleError;
use crate::input::{HostInput, HostList, RouteInput};

/// Routes matching a filter, with the route version they were read at.
#[derive(Debug, Clone)]
pub(crate) struct RouteList {
    pub version: u64,
    /// Ordered by key, then row id.
    pub rows: Vec<RouteRow>,
}

/// One key: its hosts and what its modid and cmdid are described as.
#[derive(Debug, Clone)]
pub(crate) struct KeyView {
    pub version: u64,
    /// In row order (the order agents receive them in).
    pub hosts: Vec<HostAddr>,
    pub mod_desc: Option<String>,
    pub cmd_desc: Option<String>,
}

/// `host` is already a route of `key`: a conflict shown next to `ip`.
fn present(key: ModKey, host: HostAddr) -> ConsoleError {
    ConsoleError::Conflict {
        field: "ip",
        message: format!("{host} is already a route of {key}"),
    }
}

/// `host` is not (or no longer) a route of `key`.
fn absent(key: ModKey, host: HostAddr) -> ConsoleError {
    ConsoleError::NotFound(format!(
        "{host} is not a route of {key}; nothing was changed."
    ))
}

/// The hosts of `key`, in row order.
fn hosts_of(st: &impl RouteAdmin, key: ModKey) -> Result<Vec<HostAddr>, StoreError> {
    Ok(st
        .list_routes(RouteFilter {
            modid: Some(key.modid),
            cmdid: Some(key.cmdid),
        })?
        .into_iter()
        .map(|r| r.host)
        .collect())
}

impl Console {
    /// The routes matching `filter`.
    pub(crate) async fn routes(&self, filter: RouteFilter) -> Result<RouteList, ConsoleError> {
        self.run(move |st| {
            Ok(RouteList {
                version: st.version()?,
                rows: st.list_routes(filter)?,
            })
        })
        .await
    }

    /// One key's hosts and descriptions.
    pub(crate) async fn key(&self, key: ModKey) -> Result<KeyView, ConsoleError> {
        self.run(move |st| {
            let desc = |kind, code: u32| -> Result<Option<String>, StoreError> {
                Ok(st
                    .descriptions(kind, Some(&code.to_string()))?
                    .into_iter()
                    .find(|d| d.code == code)
                    .map(|d| d.content))
            };
            Ok(KeyView {
                version: st.version()?,
                hosts: hosts_of(st, key)?,
                mod_desc: desc(DescKind::Mod, key.modid)?,
                cmd_desc: desc(DescKind::Cmd, key.cmdid)?,
            })
        })
        .await
    }

    /// Adds the typed route (key and host); answers its key and the new
    /// version.
    pub(crate) async fn add_route(
        &self,
        input: &RouteInput,
    ) -> Result<(ModKey, u64), ConsoleError> {
        let (key, host) = input.parse()?;
        let version = self.add(key, host).await?;
        Ok((key, version))
    }

    /// Adds the typed host to `key`.
    pub(crate) async fn add_host(
        &self,
        key: ModKey,
        input: &HostInput,
    ) -> Result<u64, ConsoleError> {
        let host = input.parse()?;
        self.add(key, host).await
    }

    async fn add(&self, key: ModKey, host: HostAddr) -> Result<u64, ConsoleError> {
        self.run(move |st| {
            st.add_host(key, host).map_err(|e| match e {
                StoreError::AlreadyExists(_) => present(key, host),
                e => e.into(),
            })
        })
        .await
    }

    /// Changes host `old` of `key` into the typed host, in place, reading
    /// and writing the key inside one version transaction
    /// ([`RouteAdmin::replace_host`]): concurrent edits of one key never
    /// overwrite each other.
    pub(crate) async fn edit_host(
        &self,
        key: ModKey,
        old: HostAddr,
        input: &HostInput,
    ) -> Result<u64, ConsoleError> {
        let new = input.parse()?;
        self.run(move |st| {
            st.replace_host(key, old, new).map_err(|e| match e {
                StoreError::NotFound(_) => absent(key, old),
                StoreError::AlreadyExists(_) => present(key, new),
                e => e.into(),
            })
        })
        .await
    }

    /// Removes `host` from `key`.
    pub(crate) async fn remove_host(
        &self,
        key: ModKey,
        host: HostAddr,
    ) -> Result<u64, ConsoleError> {
        self.run(move |st| {
            st.remove_host(key, host).map_err(|e| match e {
                StoreError::NotFound(_) => absent(key, host),
                e => e.into(),
            })
        })
        .await
    }

    /// Replaces the host list of `key` (duplicates collapsed; an empty list
    /// deletes the key).
    pub(crate) async fn replace_hosts(
        &self,
        key: ModKey,
        list: &HostList,
    ) -> Result<u64, ConsoleError> {
        let hosts = list.parse()?;
        self.run(move |st| Ok(st.set_hosts(key, &hosts)?)).await
    }

    /// Deletes every route of `key`.
    pub(crate) async fn delete_key(&self, key: ModKey) -> Result<u64, ConsoleError> {
        self.run(move |st| {
            st.delete_key(key).map_err(|e| match e {
                StoreError::NotFound(_) => ConsoleError::NotFound(format!("{key} has no routes")),
                e => e.into(),
            })
        })
        .await
    }
}
