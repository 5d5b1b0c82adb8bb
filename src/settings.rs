//! Settings read from the environment (README: "Environment").
//!
//! Invariant: an empty (or all-blank) value counts as unset; a value that a variable does not
//! take is an [`Error::BadSetting`] naming the variable, the value and what it takes, never
//! ignored, clamped or guessed at.

use crate::error::{Error, Result};

/// The value of `var`, trimmed; `None` when it is unset or empty. A value that is not UTF-8 is
/// a [`Error::BadSetting`].
pub(crate) fn get(var: &'static str) -> Result<Option<String>> {
    match std::env::var(var) {
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => Ok(Some(v.trim().to_string())),
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(v)) => Err(Error::BadSetting {
            var,
            value: v.to_string_lossy().into_owned(),
            expected: "UTF-8 text",
        }),
    }
}

/// A yes/no setting: `true`, `false`, `1`, `0`, `yes`, `no` in any case (`None`: unset).
pub(crate) fn flag(var: &'static str, value: Option<&str>) -> Result<Option<bool>> {
    let Some(v) = value else { return Ok(None) };
    match v.trim().to_ascii_lowercase().as_str() {
        "" => Ok(None),
        "true" | "1" | "yes" => Ok(Some(true)),
        "false" | "0" | "no" => Ok(Some(false)),
        _ => Err(Error::BadSetting {
            var,
            value: v.to_string(),
            expected: "true, false, 1, 0, yes or no",
        }),
    }
}

/// The yes/no setting `var` (`true`, `false`, `1`, `0`, `yes`, `no`, any case): `false` when unset
/// or empty; anything else is an [`Error::BadSetting`].
pub fn env_flag(var: &'static str) -> Result<bool> {
    let v = get(var)?;
    Ok(flag(var, v.as_deref())?.unwrap_or(false))
}

/// A whole number in `min..=max` (`None`: unset); `expected` says what the variable takes.
pub(crate) fn whole(
    var: &'static str,
    value: Option<&str>,
    min: u64,
    max: u64,
    expected: &'static str,
) -> Result<Option<u64>> {
    let Some(v) = value.filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    v.trim()
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .map(Some)
        .ok_or_else(|| Error::BadSetting {
            var,
            value: v.to_string(),
            expected,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_take_six_words_in_any_case() {
        for (v, want) in [
            ("TRUE", true),
            ("yes", true),
            ("1", true),
            ("False", false),
            ("NO", false),
            ("0", false),
        ] {
            assert_eq!(flag("X", Some(v)).unwrap(), Some(want), "{v}");
        }
        assert_eq!(flag("X", Some(" ")).unwrap(), None);
        let e = flag("X", Some("on")).unwrap_err().to_string();
        assert_eq!(e, "X=\"on\": expected true, false, 1, 0, yes or no");
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        assert_eq!(whole("N", Some("3"), 1, 10, "1 to 10").unwrap(), Some(3));
        assert_eq!(whole("N", None, 1, 10, "1 to 10").unwrap(), None);
        for bad in ["0", "11", "-1", "3s", "x"] {
            let e = whole("N", Some(bad), 1, 10, "1 to 10").unwrap_err();
            assert_eq!(e.to_string(), format!("N={bad:?}: expected 1 to 10"));
        }
    }
}
