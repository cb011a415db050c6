//! Docker's volume filters (`volume ls --filter`, `volume prune --filter`): `key=value`
//! pairs; values of one key are alternatives, different keys must all match.
//!
//! - `name=TEXT`: the name equals TEXT or TEXT (a regular expression) matches in it;
//! - `label=KEY` / `label=KEY=VALUE` (and `label!=`, which must not match);
//! - `dangling=true|false|1|0`: used by no container, or used;
//! - `driver=NAME`;
//! - `all=true|false`: prune only, taken by [`VolumeFilters::all`].

use std::collections::BTreeMap;

use regex::Regex;

use super::Volume;
use crate::error::{Error, Result};

/// Parsed volume filters.
#[derive(Clone, Debug, Default)]
pub struct VolumeFilters {
    names: Vec<(String, Option<Regex>)>,
    labels: Vec<(String, Option<String>)>,
    not_labels: Vec<(String, Option<String>)>,
    dangling: Option<bool>,
    drivers: Vec<String>,
    /// `all=`: prune every unused volume, not only anonymous ones.
    pub all: Option<bool>,
}

fn boolean(key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(Error::invalid(format!("Invalid filter '{key}=[{value}]'"))),
    }
}

fn key_value(text: &str) -> (String, Option<String>) {
    match text.split_once('=') {
        Some((k, v)) => (k.to_string(), Some(v.to_string())),
        None => (text.to_string(), None),
    }
}

impl VolumeFilters {
    /// Parses `key=value` filters; an unknown key or a bad value is InvalidArgument
    /// (Docker's `Invalid filter 'KEY'`).
    pub fn parse(filters: &[String]) -> Result<VolumeFilters> {
        let mut f = VolumeFilters::default();
        for text in filters {
            let (key, value) = text.split_once('=').ok_or_else(|| {
                Error::invalid(format!(
                    "bad format of filter (expected name=value): {text}"
                ))
            })?;
            match key {
                "name" => f.names.push((value.to_string(), Regex::new(value).ok())),
                "label" => f.labels.push(key_value(value)),
                "label!" => f.not_labels.push(key_value(value)),
                "dangling" => f.dangling = Some(boolean(key, value)?),
                "driver" => f.drivers.push(value.to_string()),
                "all" => f.all = Some(boolean(key, value)?),
                other => return Err(Error::invalid(format!("Invalid filter '{other}'"))),
            }
        }
        Ok(f)
    }

    /// Whether volume `v` passes every filter (`all` aside).
    pub fn matches(&self, v: &Volume) -> bool {
        let label = |labels: &BTreeMap<String, String>, (k, want): &(String, Option<String>)| {
            labels
                .get(k)
                .is_some_and(|have| want.as_ref().is_none_or(|w| w == have))
        };
        (self.names.is_empty()
            || self.names.iter().any(|(text, re)| {
                v.name == *text || re.as_ref().is_some_and(|re| re.is_match(&v.name))
            }))
            && self.labels.iter().all(|l| label(&v.labels, l))
            && !self.not_labels.iter().any(|l| label(&v.labels, l))
            && self.dangling.is_none_or(|d| d == v.used_by.is_empty())
            && (self.drivers.is_empty() || self.drivers.contains(&v.driver))
    }
}
