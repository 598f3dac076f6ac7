//! `brook serve --config brook.toml`: settings from a file, under environment variables and
//! flags. The file's keys are the flags' names (`data-dir` or `data_dir`); a key set by a
//! flag or its environment variable is left out, everything else becomes flags placed before
//! the command line's own, and clap parses and checks the result as usual.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{Context, bail};
use clap::parser::ValueSource;
use clap::{ArgMatches, Command};

/// The argument list with the file's settings added, for `serve`'s arguments in `matches`
/// (those of the `serve` subcommand, or the top level's when it has none).
pub fn merge(
    file: &Path,
    serve: &Command,
    matches: &ArgMatches,
    argv: Vec<OsString>,
    insert_at: usize,
) -> anyhow::Result<Vec<OsString>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the config file {}", file.display()))?;
    let table: toml::Table = text
        .parse()
        .with_context(|| format!("parsing the config file {}", file.display()))?;
    let mut added = Vec::new();
    for (key, value) in &table {
        let id = key.replace('-', "_");
        let Some(arg) = serve.get_arguments().find(|a| a.get_id() == id.as_str()) else {
            let known: Vec<String> = serve
                .get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned))
                .collect();
            bail!(
                "{}: unknown setting {key:?}; settings are the flags of `brook serve`: {}",
                file.display(),
                known.join(", ")
            );
        };
        if id == "config" {
            continue;
        }
        let from_user = matches!(
            matches.value_source(&id),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if from_user {
            continue;
        }
        let Some(long) = arg.get_long() else { continue };
        added.extend(flags(long, value).with_context(|| format!("{}: {key}", file.display()))?);
    }
    // The file's flags go right after the subcommand (or the program name).
    let mut out: Vec<OsString> = argv.iter().take(insert_at).cloned().collect();
    out.extend(added);
    out.extend(argv.into_iter().skip(insert_at));
    Ok(out)
}

/// A setting as flags: `true` is the bare flag, `false` nothing, a list repeats the flag.
fn flags(long: &str, value: &toml::Value) -> anyhow::Result<Vec<OsString>> {
    let flag = OsString::from(format!("--{long}"));
    let scalar = |v: &toml::Value| -> anyhow::Result<String> {
        Ok(match v {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            other => bail!("expected a string or a number, got {other}"),
        })
    };
    Ok(match value {
        toml::Value::Boolean(true) => vec![flag],
        toml::Value::Boolean(false) => Vec::new(),
        // An empty list clears the setting (`loopback-users = []`).
        toml::Value::Array(items) if items.is_empty() => vec![flag, OsString::new()],
        toml::Value::Array(items) => {
            let mut out = Vec::new();
            for item in items {
                out.push(flag.clone());
                out.push(OsString::from(scalar(item)?));
            }
            out
        }
        other => vec![flag, OsString::from(scalar(other)?)],
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use clap::{Args, FromArgMatches};

    use crate::serve::ServeArgs;

    /// The documented example must stay a valid configuration.
    #[test]
    fn the_example_file_is_valid() {
        let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/brook.example.toml");
        let command = ServeArgs::augment_args(clap::Command::new("serve"));
        let matches = command
            .clone()
            .get_matches_from(["serve", "--listen", "127.0.0.1:1"]);
        let argv = super::merge(
            &file,
            &command,
            &matches,
            vec!["serve".into(), "--listen".into(), "127.0.0.1:1".into()],
            1,
        )
        .unwrap();
        let merged = command.get_matches_from(argv);
        let args = ServeArgs::from_arg_matches(&merged).unwrap();
        assert_eq!(args.listen.to_string(), "127.0.0.1:1", "the flag wins");
        assert_eq!(args.default_user, "admin");
        assert_eq!(args.data_dir, std::path::PathBuf::from("/var/lib/brook"));
    }
}
