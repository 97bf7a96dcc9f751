//! Typed setting values: parsing a setting's text into its Kafka type and checking it against
//! the setting's validator.
//!
//! Owns: `ConfigType` (Kafka's config types, as DescribeConfigs reports them), `Value`,
//! `Validator`. Never: knows which settings exist (that is `settings.rs`), reads files.

use std::fmt;

/// Kafka's config value types, numbered as DescribeConfigs v3+ reports them (`config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

impl ConfigType {
    /// The number DescribeConfigs v3+ puts in `config_type`.
    pub fn wire_code(self) -> i8 {
        self as i8
    }

    fn name(self) -> &'static str {
        match self {
            ConfigType::Boolean => "a boolean (true or false)",
            ConfigType::String => "a string",
            ConfigType::Int => "a 32-bit integer",
            ConfigType::Long => "a 64-bit integer",
            ConfigType::Double => "a number",
            ConfigType::List => "a comma-separated list",
        }
    }
}

/// A parsed setting value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Boolean(bool),
    String(String),
    Int(i32),
    Long(i64),
    Double(f64),
    List(Vec<String>),
}

impl Value {
    /// Parses `text` as a value of type `ty`, as Kafka's `ConfigDef.parseType` does (trimmed,
    /// case-insensitive booleans, lists split on commas with blanks dropped).
    pub fn parse(ty: ConfigType, text: &str) -> Result<Value, String> {
        let t = text.trim();
        let bad = || format!("{t:?} is not {}", ty.name());
        Ok(match ty {
            ConfigType::Boolean => match t.to_ascii_lowercase().as_str() {
                "true" => Value::Boolean(true),
                "false" => Value::Boolean(false),
                _ => return Err(bad()),
            },
            ConfigType::String => Value::String(t.to_string()),
            ConfigType::Int => Value::Int(t.parse().map_err(|_| bad())?),
            ConfigType::Long => Value::Long(t.parse().map_err(|_| bad())?),
            ConfigType::Double => {
                let v: f64 = t.parse().map_err(|_| bad())?;
                if !v.is_finite() {
                    return Err(bad());
                }
                Value::Double(v)
            }
            ConfigType::List => Value::List(
                t.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect(),
            ),
        })
    }

    /// The value as a 64-bit integer, for Int and Long settings.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(v) => Some(i64::from(*v)),
            Value::Long(v) => Some(*v),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    /// The text form Kafka reports in DescribeConfigs (lists joined by commas).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Boolean(v) => write!(f, "{v}"),
            Value::String(v) => f.write_str(v),
            Value::Int(v) => write!(f, "{v}"),
            Value::Long(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::List(v) => f.write_str(&v.join(",")),
        }
    }
}

/// What a setting's value must satisfy beyond its type.
#[derive(Debug, Clone, Copy)]
pub enum Validator {
    /// Anything of the right type.
    Any,
    /// An integer in `[min, max]`.
    Range { min: i64, max: i64 },
    /// A number in `[min, max]`.
    RangeF64 { min: f64, max: f64 },
    /// One of these strings (case-sensitive, as Kafka's `ValidString`).
    OneOf(&'static [&'static str]),
    /// A non-empty list whose every element is one of these strings.
    ListOf(&'static [&'static str]),
    /// `HOST:PORT`.
    HostPort,
}

impl Validator {
    /// Checks `v`; the error says what was expected.
    pub fn check(&self, v: &Value) -> Result<(), String> {
        match (self, v) {
            (Validator::Any, _) => Ok(()),
            (Validator::Range { min, max }, v) => match v.as_i64() {
                Some(n) if n >= *min && n <= *max => Ok(()),
                Some(n) => Err(format!("{n} is outside [{min}, {max}]")),
                None => Err("not an integer".to_string()),
            },
            (Validator::RangeF64 { min, max }, Value::Double(n)) => {
                if n >= min && n <= max {
                    Ok(())
                } else {
                    Err(format!("{n} is outside [{min}, {max}]"))
                }
            }
            (Validator::OneOf(allowed), Value::String(s)) => {
                if allowed.contains(&s.as_str()) {
                    Ok(())
                } else {
                    Err(format!("{s:?} is not one of {}", allowed.join(", ")))
                }
            }
            (Validator::ListOf(allowed), Value::List(items)) => {
                if items.is_empty() {
                    return Err(format!("empty; expected some of {}", allowed.join(", ")));
                }
                match items.iter().find(|i| !allowed.contains(&i.as_str())) {
                    Some(i) => Err(format!("{i:?} is not one of {}", allowed.join(", "))),
                    None => Ok(()),
                }
            }
            (Validator::HostPort, Value::String(s)) => parse_host_port(s).map(|_| ()),
            (validator, v) => Err(format!("{v} cannot be checked by {validator:?}")),
        }
    }
}

/// Splits `HOST:PORT` (IPv6 hosts in brackets), as Kafka writes listener addresses.
pub fn parse_host_port(s: &str) -> Result<(String, u16), String> {
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("{port:?} in {s:?} is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(format!("{s:?} has no host"));
    }
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_type_and_refuses_garbage() {
        assert_eq!(
            Value::parse(ConfigType::Boolean, " TRUE "),
            Ok(Value::Boolean(true))
        );
        assert!(Value::parse(ConfigType::Boolean, "yes").is_err());
        assert_eq!(Value::parse(ConfigType::Int, "12"), Ok(Value::Int(12)));
        assert!(Value::parse(ConfigType::Int, "3000000000").is_err());
        assert_eq!(
            Value::parse(ConfigType::Long, "3000000000"),
            Ok(Value::Long(3_000_000_000))
        );
        assert!(Value::parse(ConfigType::Double, "NaN").is_err());
        assert_eq!(
            Value::parse(ConfigType::List, "compact, delete,"),
            Ok(Value::List(vec!["compact".into(), "delete".into()]))
        );
    }

    #[test]
    fn validators_say_what_is_wrong() {
        let r = Validator::Range { min: 1, max: 10 };
        assert!(r.check(&Value::Int(10)).is_ok());
        assert!(r.check(&Value::Int(0)).unwrap_err().contains("outside"));
        let l = Validator::ListOf(&["compact", "delete"]);
        assert!(l.check(&Value::List(vec!["compact".into()])).is_ok());
        assert!(l.check(&Value::List(vec!["x".into()])).is_err());
        assert!(l.check(&Value::List(vec![])).is_err());
        assert_eq!(parse_host_port("[::1]:9092"), Ok(("::1".to_string(), 9092)));
        assert!(parse_host_port("localhost").is_err());
    }
}
