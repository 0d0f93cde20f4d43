//! Settings of a service type (`spec.settings`): plain string keys, each with a description and
//! the check its value must pass.

/// One key of `spec.settings`.
#[derive(Debug)]
pub struct SettingDescriptor {
    /// The key.
    pub key: &'static str,
    /// What it changes.
    pub description: &'static str,
    /// The value used when the key is absent.
    pub default: Option<&'static str>,
    /// What values are accepted.
    pub check: SettingCheck,
}

/// What values a setting accepts.
#[derive(Debug)]
pub enum SettingCheck {
    /// Any text up to this many bytes.
    Text {
        /// The longest accepted value, in bytes.
        max_len: usize,
    },
    /// A whole number in a range.
    Integer {
        /// Smallest accepted.
        min: i64,
        /// Largest accepted.
        max: i64,
    },
    /// One of these words.
    OneOf(&'static [&'static str]),
    /// A size as php.ini writes it: a whole number of bytes, optionally with `K`, `M` or `G`.
    ByteSize {
        /// `-1` (no limit) is accepted too.
        unlimited: bool,
    },
    /// Names (letters, digits, `_`) separated by commas; empty is accepted.
    Identifiers,
    /// One name: letters, digits and `_`, not empty.
    Name {
        /// The longest accepted, in bytes.
        max_len: usize,
    },
}

impl SettingCheck {
    /// Why `value` is refused, if it is.
    pub fn check(&self, value: &str) -> Result<(), String> {
        match self {
            SettingCheck::Text { max_len } if value.len() > *max_len => {
                Err(format!("at most {max_len} bytes (got {})", value.len()))
            }
            SettingCheck::Text { .. } => Ok(()),
            SettingCheck::Integer { min, max } => match value.parse::<i64>() {
                Ok(n) if (*min..=*max).contains(&n) => Ok(()),
                _ => Err(format!(
                    "{value:?} is not a whole number from {min} to {max}"
                )),
            },
            SettingCheck::OneOf(words) if words.contains(&value) => Ok(()),
            SettingCheck::OneOf(words) => {
                Err(format!("{value:?} is not one of {}", words.join(", ")))
            }
            SettingCheck::ByteSize { unlimited } => {
                let digits = value.strip_suffix(['K', 'M', 'G']).unwrap_or(value);
                let number = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
                if number || (*unlimited && value == "-1") {
                    Ok(())
                } else {
                    Err(format!("{value:?} is not {}", self.describe()))
                }
            }
            SettingCheck::Name { max_len } => {
                let ok = !value.is_empty()
                    && value.len() <= *max_len
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if ok {
                    Ok(())
                } else {
                    Err(format!("{value:?} is not {}", self.describe()))
                }
            }
            SettingCheck::Identifiers => {
                let names = value.split(',').map(str::trim).filter(|n| !n.is_empty());
                match names
                    .clone()
                    .find(|n| !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
                {
                    Some(bad) => Err(format!("{bad:?} is not a name (letters, digits, _)")),
                    None => Ok(()),
                }
            }
        }
    }

    /// What is accepted, in a few words.
    pub fn describe(&self) -> String {
        match self {
            SettingCheck::Text { max_len } => format!("text, at most {max_len} bytes"),
            SettingCheck::Integer { min, max } => format!("whole number {min}..{max}"),
            SettingCheck::OneOf(words) => format!("one of {}", words.join(", ")),
            SettingCheck::ByteSize { unlimited: false } => {
                "a size in bytes, e.g. 512K, 8M, 1G".into()
            }
            SettingCheck::ByteSize { unlimited: true } => {
                "a size in bytes, e.g. 512K, 8M, 1G, or -1".into()
            }
            SettingCheck::Identifiers => "names separated by commas".into(),
            SettingCheck::Name { max_len } => {
                format!("a name of letters, digits and _, at most {max_len} bytes")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_refuse_with_the_reason() {
        assert!(SettingCheck::Integer { min: 1, max: 9 }.check("5").is_ok());
        let err = SettingCheck::Integer { min: 1, max: 9 }
            .check("10")
            .unwrap_err();
        assert!(err.contains("from 1 to 9"), "{err}");
        let err = SettingCheck::OneOf(&["on", "off"])
            .check("maybe")
            .unwrap_err();
        assert!(err.contains("on, off"), "{err}");
        assert!(SettingCheck::Text { max_len: 3 }.check("abcd").is_err());
        let size = SettingCheck::ByteSize { unlimited: false };
        assert!(size.check("128M").is_ok() && size.check("1024").is_ok());
        for bad in ["-1", "M", "12 M", "1T", ""] {
            assert!(size.check(bad).is_err(), "{bad:?}");
        }
        assert!(
            SettingCheck::ByteSize { unlimited: true }
                .check("-1")
                .is_ok()
        );
        assert!(
            SettingCheck::Identifiers
                .check("exec, system,passthru")
                .is_ok()
        );
        assert!(SettingCheck::Identifiers.check("").is_ok());
        let name = SettingCheck::Name { max_len: 8 };
        assert!(name.check("shop_1").is_ok());
        for bad in ["", "a-b", "drop table", "toolongname"] {
            assert!(name.check(bad).is_err(), "{bad:?}");
        }
        let err = SettingCheck::Identifiers.check("exec;rm").unwrap_err();
        assert!(err.contains("exec;rm"), "{err}");
    }
}
