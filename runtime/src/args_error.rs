//! Flag errors in one line.
//!
//! clap reports a bad flag with a usage block over several lines; a service that cannot start
//! says why in one line (`galley: unexpected argument '--bogus' found (see --help)`) and exits 2.
//! `--help` and `--version` print as clap renders them and exit 0.

use clap::Parser;
use clap::error::ErrorKind;

/// Parses the process arguments as `A`, exiting with a one-line reason on error.
pub fn parse_args<A: Parser>(service: &str) -> A {
    match A::try_parse() {
        Ok(a) => a,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                eprintln!("{}", one_line(service, &e.render().to_string()));
                std::process::exit(2)
            }
        },
    }
}

/// `service: <first line of clap's message without "error: "> (see --help)`.
fn one_line(service: &str, rendered: &str) -> String {
    let first = rendered.lines().next().unwrap_or("invalid arguments");
    let reason = first.strip_prefix("error: ").unwrap_or(first).trim();
    format!("{service}: {reason} (see --help)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Parser)]
    struct Demo {
        /// A port.
        #[arg(long)]
        port: u16,
    }

    #[test]
    fn bad_flags_become_one_line() {
        let e = Demo::try_parse_from(["demo", "--port", "x"]).unwrap_err();
        let line = one_line("demo", &e.render().to_string());
        assert!(!line.contains('\n'));
        assert!(
            line.starts_with("demo: invalid value 'x' for '--port <PORT>'"),
            "{line}"
        );
        assert!(line.ends_with("(see --help)"));
        let e = Demo::try_parse_from(["demo", "--port", "1", "--bogus"]).unwrap_err();
        assert_eq!(
            one_line("demo", &e.render().to_string()),
            "demo: unexpected argument '--bogus' found (see --help)"
        );
    }
}
