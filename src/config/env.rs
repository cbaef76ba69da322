//! `${VAR}` expansion over the parsed YAML tree, before it is typed.
//!
//! Expanding on the tree (not the text) means a value can never change the YAML structure,
//! and an unset variable is reported with the key path it was used at.

use serde_json::Value;

use super::ConfigError;

/// Expands `${VAR}` and `${VAR:-default}` in every string of `value`; `$$` is a literal `$`.
pub fn expand_tree(value: &mut Value, path: &mut Vec<String>) -> Result<(), ConfigError> {
    match value {
        Value::String(s) if s.contains('$') => {
            *s = expand(s, &path.join("."))?;
        }
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                path.push(i.to_string());
                expand_tree(item, path)?;
                path.pop();
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                path.push(k.clone());
                expand_tree(v, path)?;
                path.pop();
            }
        }
        _ => {}
    }
    Ok(())
}

fn expand(input: &str, key: &str) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body.find('}').ok_or_else(|| {
                ConfigError::new(key, format!("unterminated \"${{\" in {input:?}"))
                    .hint("write ${NAME}, or $$ for a literal dollar sign")
            })?;
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match (std::env::var(name), default) {
                (Ok(v), _) => out.push_str(&v),
                (Err(_), Some(d)) => out.push_str(d),
                (Err(_), None) => {
                    return Err(ConfigError::new(
                        key,
                        format!("environment variable {name} is not set (used as ${{{name}}})"),
                    )
                    .hint(format!(
                        "export {name}=..., or write ${{{name}:-default}} to give a default"
                    )));
                }
            }
            rest = &body[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_set_default_and_literal_dollars() {
        let path = std::env::var("PATH").unwrap_or_default();
        assert_eq!(expand("x${PATH}y", "k").unwrap(), format!("x{path}y"));
        assert_eq!(expand("${MCPGATE_UNSET_ZZ:-d}", "k").unwrap(), "d");
        assert_eq!(expand("$$5 and $x", "k").unwrap(), "$5 and $x");
    }

    #[test]
    fn unset_variable_names_key_and_variable() {
        let err = expand("${MCPGATE_UNSET_QQ}", "auth.bearer.tokens.0").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("auth.bearer.tokens.0"), "{text}");
        assert!(text.contains("MCPGATE_UNSET_QQ"), "{text}");
    }
}
