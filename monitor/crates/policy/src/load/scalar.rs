//! Plain-scalar resolution: what an unquoted YAML scalar is (null, boolean, integer, float or
//! string), by the YAML 1.2 core schema, as `serde_yaml_ng` resolves it.

use serde::de::Visitor;

use super::error::DeError;

/// YAML 1.2 core-schema resolution of a plain scalar, as `serde_yaml_ng` does it.
pub(super) fn visit_plain<'de, V: Visitor<'de>>(t: &str, v: V) -> Result<V::Value, DeError> {
    match t {
        "" | "~" | "null" | "Null" | "NULL" => return v.visit_unit(),
        "true" | "True" | "TRUE" => return v.visit_bool(true),
        "false" | "False" | "FALSE" => return v.visit_bool(false),
        _ => {}
    }
    if let Some(u) = parse_uint(t) {
        return v.visit_u64(u);
    }
    if let Some(rest) = t.strip_prefix('-')
        && let Some(u) = parse_uint(rest)
        && !rest.starts_with('+')
        && let Ok(i) = i64::try_from(u)
    {
        return v.visit_i64(-i);
    }
    if let Some(f) = parse_float(t) {
        return v.visit_f64(f);
    }
    v.visit_str(t)
}

fn parse_uint(t: &str) -> Option<u64> {
    let t = t.strip_prefix('+').unwrap_or(t);
    for (prefix, radix) in [("0x", 16), ("0o", 8), ("0b", 2)] {
        if let Some(rest) = t.strip_prefix(prefix) {
            return (!rest.is_empty() && rest.chars().all(|c| c.is_digit(radix)))
                .then(|| u64::from_str_radix(rest, radix).ok())
                .flatten();
        }
    }
    (!t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
        .then(|| t.parse().ok())
        .flatten()
}

fn parse_float(t: &str) -> Option<f64> {
    let unsigned = t.strip_prefix(['+', '-']).unwrap_or(t);
    match unsigned {
        ".inf" | ".Inf" | ".INF" if t.starts_with('-') => return Some(f64::NEG_INFINITY),
        ".inf" | ".Inf" | ".INF" => return Some(f64::INFINITY),
        ".nan" | ".NaN" | ".NAN" if t == unsigned => return Some(f64::NAN),
        _ => {}
    }
    // [0-9]*(\.[0-9]*)?([eE][-+]?[0-9]+)? with at least one digit before the exponent.
    let (mantissa, exp) = match unsigned.find(['e', 'E']) {
        Some(i) => (&unsigned[..i], Some(&unsigned[i + 1..])),
        None => (unsigned, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let ok = digits(int)
        && digits(frac)
        && !(int.is_empty() && frac.is_empty())
        && exp.is_none_or(|e| {
            let e = e.strip_prefix(['+', '-']).unwrap_or(e);
            !e.is_empty() && digits(e)
        });
    if !ok {
        return None;
    }
    t.parse::<f64>().ok().filter(|f| f.is_finite())
}
