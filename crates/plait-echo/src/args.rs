//! A small command-line parser: `--name value`, `--name=value` and bare
//! boolean flags; enough for two tools and no dependency.

use std::collections::HashMap;
use std::str::FromStr;

pub struct Args {
    values: HashMap<String, String>,
}

impl Args {
    /// Parse `argv` (without the program name). `valued` lists the options
    /// that take a value, `flags` the boolean ones; anything else is an error.
    pub fn parse<I: IntoIterator<Item = String>>(
        argv: I,
        valued: &[&str],
        flags: &[&str],
    ) -> Result<Args, String> {
        let mut values = HashMap::new();
        let mut it = argv.into_iter();
        while let Some(arg) = it.next() {
            let Some(body) = arg.strip_prefix("--") else {
                return Err(format!("unexpected argument {arg:?}"));
            };
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            if flags.contains(&name.as_str()) {
                if inline.is_some() {
                    return Err(format!("--{name} takes no value"));
                }
                values.insert(name, String::new());
            } else if valued.contains(&name.as_str()) {
                let value = match inline {
                    Some(v) => v,
                    None => it.next().ok_or_else(|| format!("--{name} needs a value"))?,
                };
                values.insert(name, value);
            } else {
                return Err(format!("unknown option --{name}"));
            }
        }
        Ok(Args { values })
    }

    pub fn flag(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// The option's value parsed as `T`, or None if it was not given.
    pub fn get<T: FromStr>(&self, name: &str) -> Result<Option<T>, String> {
        match self.values.get(name) {
            None => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| format!("--{name}: bad value {v:?}")),
        }
    }

    pub fn get_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        Ok(self.get(name)?.unwrap_or(default))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &[&str]) -> Result<Args, String> {
        Args::parse(
            v.iter().map(|s| s.to_string()),
            &["port", "size"],
            &["quiet"],
        )
    }

    #[test]
    fn both_spellings_and_flags() {
        let a = parse(&["--port", "80", "--size=5", "--quiet"]).unwrap();
        assert_eq!(a.get::<u16>("port").unwrap(), Some(80));
        assert_eq!(a.get_or::<usize>("size", 1).unwrap(), 5);
        assert!(a.flag("quiet"));
    }

    #[test]
    fn errors() {
        assert!(parse(&["--nope", "1"]).is_err());
        assert!(parse(&["--port"]).is_err());
        assert!(parse(&["--quiet=1"]).is_err());
        assert!(parse(&["--port", "x"]).unwrap().get::<u16>("port").is_err());
    }
}
