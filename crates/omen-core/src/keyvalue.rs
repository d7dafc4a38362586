//! Key/value parameters: the one form every front end turns its input into
//! (TOML tables, `--param key=value` flags, JSON objects, Python keyword
//! arguments), and [`ParamSpec`], the keys a kind takes, so that an unknown or
//! inapplicable key is an error naming the valid ones.

use crate::error::{Error, Result};
use std::fmt;

/// One parameter value as a front end gave it.
///
/// Strings are accepted wherever a number or a flag is expected (command-line
/// flags arrive as strings) and parsed on use.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum ParamValue {
    /// An integer (wide enough for any `u64` or `i64`).
    Int(i128),
    /// A floating-point number.
    Float(f64),
    /// A flag.
    Bool(bool),
    /// Text, parsed on use.
    Str(String),
}

impl fmt::Display for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Int(v) => write!(f, "{v}"),
            ParamValue::Float(v) => write!(f, "{v}"),
            ParamValue::Bool(v) => write!(f, "{v}"),
            ParamValue::Str(v) => write!(f, "{v}"),
        }
    }
}

macro_rules! int_value {
    ($($t:ty),*) => {$(
        impl From<$t> for ParamValue {
            fn from(v: $t) -> Self {
                ParamValue::Int(v as i128)
            }
        }
    )*};
}
int_value!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

impl From<f64> for ParamValue {
    fn from(v: f64) -> Self {
        ParamValue::Float(v)
    }
}

impl From<f32> for ParamValue {
    fn from(v: f32) -> Self {
        ParamValue::Float(f64::from(v))
    }
}

impl From<bool> for ParamValue {
    fn from(v: bool) -> Self {
        ParamValue::Bool(v)
    }
}

impl From<&str> for ParamValue {
    fn from(v: &str) -> Self {
        ParamValue::Str(v.to_owned())
    }
}

impl From<String> for ParamValue {
    fn from(v: String) -> Self {
        ParamValue::Str(v)
    }
}

/// One key a kind takes.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    /// The canonical key (`snake_case`).
    pub name: &'static str,
    /// Other spellings accepted for it (`-` is always accepted for `_`).
    pub aliases: &'static [&'static str],
    /// One line for help texts, with the default.
    pub help: &'static str,
}

impl ParamSpec {
    /// A key without aliases.
    pub const fn new(name: &'static str, help: &'static str) -> Self {
        ParamSpec {
            name,
            aliases: &[],
            help,
        }
    }

    /// The same key, also accepted as each of `aliases`.
    pub const fn aliases(mut self, aliases: &'static [&'static str]) -> Self {
        self.aliases = aliases;
        self
    }

    fn matches(&self, key: &str) -> bool {
        self.name == key || self.aliases.contains(&key)
    }
}

/// Key/value parameters, in the order given, keys unique.
///
/// Keys are normalised on insertion (`-` becomes `_`), so `ef-construction`
/// and `ef_construction` are one key. Typed getters parse a value on use and
/// name the key in their error.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Params {
    entries: Vec<(String, ParamValue)>,
}

fn normalize_key(key: &str) -> String {
    key.trim().replace('-', "_")
}

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key` (replacing an earlier value).
    pub fn set(&mut self, key: &str, value: impl Into<ParamValue>) {
        let key = normalize_key(key);
        let value = value.into();
        match self.entries.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key, value)),
        }
    }

    /// `self` with `key` set.
    pub fn with(mut self, key: &str, value: impl Into<ParamValue>) -> Self {
        self.set(key, value);
        self
    }

    /// Parses `key=value` (a command-line flag's argument) and sets it; the
    /// value is kept as text and parsed on use.
    pub fn set_pair(&mut self, pair: &str) -> Result<()> {
        match pair.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => {
                self.set(k, v.trim());
                Ok(())
            }
            _ => Err(Error::invalid_param(
                "param",
                format!("{pair:?}: expected key=value"),
            )),
        }
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&ParamValue> {
        let key = normalize_key(key);
        self.entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// Removes `key` and returns its value.
    pub fn remove(&mut self, key: &str) -> Option<ParamValue> {
        let key = normalize_key(key);
        let i = self.entries.iter().position(|(k, _)| *k == key)?;
        Some(self.entries.remove(i).1)
    }

    /// The entries, in the order set.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &ParamValue)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Every key of `other` set on `self` as well (`other` wins).
    pub fn merged(mut self, other: &Params) -> Params {
        for (k, v) in other.iter() {
            self.set(k, v.clone());
        }
        self
    }

    /// `Ok` when every key is one `specs` takes (under any of its names, once);
    /// otherwise the error [`canonical`](Self::canonical) gives. Allocates
    /// nothing unless it fails: an index calls it on every search.
    pub fn check_keys(&self, owner: &str, specs: &[ParamSpec]) -> Result<()> {
        let known = |k: &str| specs.iter().position(|s| s.matches(k));
        let mut ok = true;
        for (i, (k, _)) in self.entries.iter().enumerate() {
            match known(k) {
                None => ok = false,
                Some(si) => {
                    if self.entries[..i]
                        .iter()
                        .any(|(k2, _)| known(k2) == Some(si))
                    {
                        ok = false;
                    }
                }
            }
        }
        if ok {
            return Ok(());
        }
        self.canonical(owner, specs).map(|_| ())
    }

    /// The same parameters under their canonical names, or `InvalidParameter`
    /// for the first key `specs` does not take, naming `owner` (`"hnsw build"`)
    /// and every valid key. Two spellings of one key are an error too.
    pub fn canonical(&self, owner: &str, specs: &[ParamSpec]) -> Result<Params> {
        let unknown: Vec<String> = self
            .iter()
            .filter(|(k, _)| !specs.iter().any(|s| s.matches(k)))
            .map(|(k, _)| format!("{k:?}"))
            .collect();
        if !unknown.is_empty() {
            let valid = if specs.is_empty() {
                "it takes none".to_owned()
            } else {
                format!(
                    "valid: {}",
                    specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                )
            };
            let keys = if unknown.len() == 1 { "key" } else { "keys" };
            return Err(Error::invalid_param(
                "params",
                format!(
                    "{owner} parameters have no {keys} {} ({valid})",
                    unknown.join(", ")
                ),
            ));
        }
        let mut out = Params::new();
        for (k, v) in self.iter() {
            let Some(spec) = specs.iter().find(|s| s.matches(k)) else {
                continue;
            };
            if out.get(spec.name).is_some() {
                return Err(Error::invalid_param(
                    spec.name,
                    format!("{owner} parameter given twice ({k:?} is another name for it)"),
                ));
            }
            out.set(spec.name, v.clone());
        }
        Ok(out)
    }

    fn int(&self, key: &'static str) -> Result<Option<i128>> {
        let bad =
            |v: &ParamValue| Error::invalid_param(key, format!("expected an integer, got {v:?}"));
        match self.get(key) {
            None => Ok(None),
            Some(ParamValue::Int(v)) => Ok(Some(*v)),
            Some(v @ ParamValue::Float(f)) => {
                if f.fract() == 0.0 && f.is_finite() && f.abs() < 1e30 {
                    Ok(Some(*f as i128))
                } else {
                    Err(bad(v))
                }
            }
            Some(ParamValue::Str(s)) => s
                .trim()
                .replace('_', "")
                .parse::<i128>()
                .map(Some)
                .map_err(|_| bad(&ParamValue::Str(s.clone()))),
            Some(v @ ParamValue::Bool(_)) => Err(bad(v)),
        }
    }

    /// `key` as a `usize` (non-negative integer).
    pub fn usize(&self, key: &'static str) -> Result<Option<usize>> {
        self.int(key)?
            .map(|v| {
                usize::try_from(v).map_err(|_| {
                    Error::invalid_param(key, format!("expected a non-negative integer, got {v}"))
                })
            })
            .transpose()
    }

    /// `key` as a `u32`.
    pub fn u32(&self, key: &'static str) -> Result<Option<u32>> {
        self.int(key)?
            .map(|v| {
                u32::try_from(v).map_err(|_| {
                    Error::invalid_param(key, format!("expected an integer in 0..=2^32-1, got {v}"))
                })
            })
            .transpose()
    }

    /// `key` as a `u64`.
    pub fn u64(&self, key: &'static str) -> Result<Option<u64>> {
        self.int(key)?
            .map(|v| {
                u64::try_from(v).map_err(|_| {
                    Error::invalid_param(key, format!("expected an integer in 0..=2^64-1, got {v}"))
                })
            })
            .transpose()
    }

    /// `key` as a finite `f64`.
    pub fn f64(&self, key: &'static str) -> Result<Option<f64>> {
        let v = match self.get(key) {
            None => return Ok(None),
            Some(ParamValue::Int(v)) => *v as f64,
            Some(ParamValue::Float(v)) => *v,
            Some(ParamValue::Str(s)) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| Error::invalid_param(key, format!("expected a number, got {s:?}")))?,
            Some(v @ ParamValue::Bool(_)) => {
                return Err(Error::invalid_param(
                    key,
                    format!("expected a number, got {v:?}"),
                ))
            }
        };
        if !v.is_finite() {
            return Err(Error::invalid_param(
                key,
                format!("must be finite, got {v}"),
            ));
        }
        Ok(Some(v))
    }

    /// `key` as a flag (`true`/`false`, `1`/`0`, `yes`/`no`).
    pub fn bool(&self, key: &'static str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(ParamValue::Bool(b)) => Ok(Some(*b)),
            Some(ParamValue::Int(0)) => Ok(Some(false)),
            Some(ParamValue::Int(1)) => Ok(Some(true)),
            Some(ParamValue::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(Some(true)),
                "false" | "0" | "no" | "off" => Ok(Some(false)),
                _ => Err(Error::invalid_param(
                    key,
                    format!("expected true or false, got {s:?}"),
                )),
            },
            Some(v) => Err(Error::invalid_param(
                key,
                format!("expected true or false, got {v:?}"),
            )),
        }
    }
}

impl fmt::Display for Params {
    /// `key=value key=value`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{k}={v}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[ParamSpec] = &[
        ParamSpec::new("ef", "beam"),
        ParamSpec::new("rerank_factor", "re-rank").aliases(&["rerank"]),
    ];

    #[test]
    fn canonical_resolves_aliases_and_refuses_unknown_keys() {
        let p = Params::new().with("rerank", 3).with("ef", "40");
        let c = p.canonical("t search", SPECS).unwrap();
        assert_eq!(c.usize("rerank_factor").unwrap(), Some(3));
        assert_eq!(c.usize("ef").unwrap(), Some(40));
        let e = Params::new()
            .with("nprobe", 3)
            .canonical("t search", SPECS)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"nprobe\"") && e.contains("valid: ef, rerank_factor"),
            "{e}"
        );
        let twice = Params::new().with("rerank", 1).with("rerank_factor", 2);
        assert!(twice.canonical("t", SPECS).is_err());
        assert!(twice.check_keys("t", SPECS).is_err());
        assert!(p.check_keys("t", SPECS).is_ok());
        assert!(Params::new().with("x", 1).check_keys("t", SPECS).is_err());
        let none = Params::new().with("x", 1).canonical("flat build", &[]);
        assert!(none.unwrap_err().to_string().contains("it takes none"));
        let two = Params::new().with("x", 1).with("ef", 2).with("y", 3);
        let e = two.canonical("t search", SPECS).unwrap_err().to_string();
        assert!(e.contains(r#"no keys "x", "y" (valid"#), "{e}");
    }

    #[test]
    fn typed_getters_parse_and_name_the_key() {
        let mut p = Params::new();
        p.set_pair("ef-construction=200").unwrap();
        p.set_pair("t = 0.5").unwrap();
        p.set("neg", -1);
        p.set("flag", "yes");
        assert_eq!(p.usize("ef_construction").unwrap(), Some(200));
        assert_eq!(p.f64("t").unwrap(), Some(0.5));
        assert_eq!(p.bool("flag").unwrap(), Some(true));
        assert_eq!(p.usize("missing").unwrap(), None);
        let e = p.usize("neg").unwrap_err().to_string();
        assert!(e.contains("neg") && e.contains("non-negative"), "{e}");
        assert!(p.usize("t").is_err());
        assert!(p.set_pair("novalue").is_err());
        assert!(p.set_pair("=3").is_err());
        p.set("inf", f64::INFINITY);
        assert!(p.f64("inf").is_err());
        assert_eq!(
            p.to_string(),
            "ef_construction=200 t=0.5 neg=-1 flag=yes inf=inf"
        );
    }
}
