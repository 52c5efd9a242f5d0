//! ModID and CmdID descriptions (`ModIDConfig`, `CmdIDConfig`).

use std::collections::HashMap;

use lars_store::{DescKind, Description, Descriptions, StoreError};

use super::Console;
use crate::error::ConsoleError;
use crate::input::DescInput;

/// The field (and path segment) naming a description's code.
pub(crate) fn code_field(kind: DescKind) -> &'static str {
    match kind {
        DescKind::Mod => "modid",
        DescKind::Cmd => "cmdid",
    }
}

/// Every description's text by code, for labelling keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct Names {
    pub mods: HashMap<u32, String>,
    pub cmds: HashMap<u32, String>,
}

impl Console {
    /// Descriptions of `kind` ordered by code; `search` keeps those whose
    /// text contains it or whose code equals it.
    pub(crate) async fn descriptions(
        &self,
        kind: DescKind,
        search: Option<String>,
    ) -> Result<Vec<Description>, ConsoleError> {
        self.run(move |st| Ok(st.descriptions(kind, search.as_deref())?))
            .await
    }

    /// Every description, by kind and code.
    pub(crate) async fn names(&self) -> Result<Names, ConsoleError> {
        self.run(|st| {
            let all = |kind| -> Result<HashMap<u32, String>, StoreError> {
                Ok(st
                    .descriptions(kind, None)?
                    .into_iter()
                    .map(|d| (d.code, d.content))
                    .collect())
            };
            Ok(Names {
                mods: all(DescKind::Mod)?,
                cmds: all(DescKind::Cmd)?,
            })
        })
        .await
    }

    /// Sets (inserts or updates) the typed description; answers its code and
    /// the text as stored.
    pub(crate) async fn save_description(
        &self,
        kind: DescKind,
        input: &DescInput,
    ) -> Result<(u32, String), ConsoleError> {
        let (code, content) = input.parse(code_field(kind))?;
        self.run(move |st| {
            st.set_description(kind, code, &content)?;
            Ok((code, content))
        })
        .await
    }

    /// Deletes the description of `code`.
    pub(crate) async fn delete_description(
        &self,
        kind: DescKind,
        code: u32,
    ) -> Result<(), ConsoleError> {
        self.run(move |st| {
            st.delete_description(kind, code).map_err(|e| match e {
                StoreError::NotFound(_) => ConsoleError::NotFound(format!(
                    "{} {code} has no description",
                    code_field(kind)
                )),
                e => e.into(),
            })
        })
        .await
    }
}
