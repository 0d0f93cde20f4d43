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
        }
    }

    /// What is accepted, in a few words.
    pub fn describe(&self) -> String {
        match self {
            SettingCheck::Text { max_len } => format!("text, at most {max_len} bytes"),
            SettingCheck::Integer { min, max } => format!("whole number {min}..{max}"),
            SettingCheck::OneOf(words) => format!("one of {}", words.join(", ")),
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
    }
}
