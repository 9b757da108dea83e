//! What an interpreter runs, read from its command line with the real
//! option grammar of its dialect.
//!
//! The dialect comes from the gold image (`code.interpreter`), never from
//! `argv[0]` or the executable's name: anyone can copy `python3` to
//! `/tmp/foo`. The parsers follow the interpreters' own grammars closely
//! enough to find the one program they run, and refuse (as
//! [`Invocation::Unparsed`]) whatever they cannot read with certainty — an
//! unknown option may take a value, and guessing wrong would name the wrong
//! file as the program.
//!
//! What this proves is bounded: `/proc/<pid>/cmdline` is the memory of the
//! process, so a process that already runs code of its choosing can rewrite
//! it. The check binds how the process was started, which is what an
//! attacker without code execution inside the workload controls.

use std::fmt;

/// How an interpreter reads its command line; from the gold image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Dialect {
    /// CPython 3.
    Python,
    /// Node.js.
    Node,
}

impl Dialect {
    /// Parses `python` or `node`.
    pub fn parse(name: &str) -> Option<Dialect> {
        match name {
            "python" => Some(Dialect::Python),
            "node" => Some(Dialect::Node),
            _ => None,
        }
    }

    /// `python` or `node`.
    pub fn as_str(self) -> &'static str {
        match self {
            Dialect::Python => "python",
            Dialect::Node => "node",
        }
    }

    /// Environment variables that change what this interpreter loads or
    /// runs. Only whether they are set is ever read.
    pub fn loader_env(self) -> &'static [&'static str] {
        match self {
            Dialect::Python => PYTHON_ENV,
            Dialect::Node => NODE_ENV,
        }
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Environment variables that change what any dynamically linked program
/// loads: the dynamic loader reads them before `main`.
pub const NATIVE_ENV: &[&str] = &["LD_PRELOAD", "LD_AUDIT"];

/// Python's: extra import paths, a startup file, another stdlib, another
/// user site, an interactive session after the script, no safe path.
pub const PYTHON_ENV: &[&str] = &[
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "PYTHONINSPECT",
    "PYTHONSAFEPATH",
    "PYTHONPLATLIBDIR",
];

/// Node's: options (which may preload code) and extra module paths.
pub const NODE_ENV: &[&str] = &["NODE_OPTIONS", "NODE_PATH"];

/// How an interpreter gets its main program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgramKind {
    /// A script file (`python3 app/main.py`, `node app/main.js`).
    Script,
    /// A module found on the import path (`python3 -m app.main`).
    Module,
    /// Code on the command line (`-c`, `-e`, `-p`).
    Inline,
    /// The program read from standard input (`-`).
    Stdin,
    /// An interactive session (no program, `-i`, `--inspect`).
    Interactive,
}

impl ProgramKind {
    /// `script`, `module`, `inline`, `stdin` or `interactive`.
    pub fn as_str(self) -> &'static str {
        match self {
            ProgramKind::Script => "script",
            ProgramKind::Module => "module",
            ProgramKind::Inline => "inline",
            ProgramKind::Stdin => "stdin",
            ProgramKind::Interactive => "interactive",
        }
    }
}

/// What one command line runs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Invocation {
    /// The command line was read.
    Parsed {
        /// How the main program is given.
        kind: ProgramKind,
        /// The script path or module name (empty for inline, stdin and
        /// interactive programs).
        target: String,
        /// Code loaded before the main program (node `-r`, `--import`,
        /// `--loader`), as given.
        preloads: Vec<String>,
        /// Python's isolation flags present (`-I`, `-E`, `-s`, `-P`) and
        /// `-i` (an interactive session follows the program).
        flags: Vec<char>,
    },
    /// The command line cannot be read with certainty: why.
    Unparsed(String),
}

/// Reads `args` (the command line without `argv[0]`) in `dialect`.
pub fn parse<S: AsRef<str>>(dialect: Dialect, args: &[S]) -> Invocation {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    match dialect {
        Dialect::Python => python(&args),
        Dialect::Node => node(&args),
    }
}

/// Python short options that take no argument.
const PY_FLAGS: &str = "bBdEhiIOPqsSuvVx?R";
/// Python short options whose argument follows (attached or next).
const PY_WITH_ARG: &str = "cmWXQ";

/// CPython 3's command line (`Python/getopt.c`, `Python/initconfig.c`).
fn python(args: &[&str]) -> Invocation {
    let mut flags = Vec::new();
    let mut i = 0;
    let parsed = |kind, target: &str, flags: Vec<char>| Invocation::Parsed {
        kind,
        target: target.to_owned(),
        preloads: Vec::new(),
        flags,
    };
    while let Some(arg) = args.get(i).copied() {
        i += 1;
        if arg == "--" {
            return match args.get(i) {
                Some(script) => with_inspect(parsed(ProgramKind::Script, script, flags)),
                None => parsed(ProgramKind::Interactive, "", flags),
            };
        }
        if arg == "-" {
            return with_inspect(parsed(ProgramKind::Stdin, "", flags));
        }
        if let Some(long) = arg.strip_prefix("--") {
            match long.split_once('=').map_or(long, |(name, _)| name) {
                "check-hash-based-pycs" => {
                    if !long.contains('=') {
                        i += 1;
                    }
                }
                "help" | "version" | "help-env" | "help-xoptions" | "help-all" => {
                    return Invocation::Unparsed(format!("python --{long} runs no program"));
                }
                _ => return Invocation::Unparsed(format!("unknown python option --{long}")),
            }
            continue;
        }
        let Some(shorts) = arg.strip_prefix('-') else {
            return with_inspect(parsed(ProgramKind::Script, arg, flags));
        };
        for (at, c) in shorts.char_indices() {
            if PY_WITH_ARG.contains(c) {
                let rest = shorts.get(at + c.len_utf8()..).unwrap_or_default();
                let value = if rest.is_empty() {
                    let Some(next) = args.get(i).copied() else {
                        return Invocation::Unparsed(format!(
                            "python option -{c} needs an argument"
                        ));
                    };
                    i += 1;
                    next
                } else {
                    rest
                };
                match c {
                    'c' => return with_inspect(parsed(ProgramKind::Inline, "", flags)),
                    'm' => return with_inspect(parsed(ProgramKind::Module, value, flags)),
                    _ => break,
                }
            }
            if !PY_FLAGS.contains(c) {
                return Invocation::Unparsed(format!("unknown python option -{c}"));
            }
            if matches!(c, 'I' | 'E' | 's' | 'P' | 'i') && !flags.contains(&c) {
                flags.push(c);
            }
            if matches!(c, 'h' | '?' | 'V') {
                return Invocation::Unparsed(format!("python -{c} runs no program"));
            }
        }
    }
    parsed(ProgramKind::Interactive, "", flags)
}

/// `-i` runs an interactive session after the program: that session is
/// what the process ends up running.
fn with_inspect(invocation: Invocation) -> Invocation {
    match invocation {
        Invocation::Parsed {
            target,
            preloads,
            flags,
            ..
        } if flags.contains(&'i') => Invocation::Parsed {
            kind: ProgramKind::Interactive,
            target,
            preloads,
            flags,
        },
        other => other,
    }
}

/// Node options that take their value in the next argument (or after `=`)
/// and do not load code.
const NODE_WITH_VALUE: &[&str] = &[
    "--conditions",
    "-C",
    "--cpu-prof-dir",
    "--cpu-prof-name",
    "--cpu-prof-interval",
    "--diagnostic-dir",
    "--disable-warning",
    "--dns-result-order",
    "--heap-prof-dir",
    "--heap-prof-name",
    "--heap-prof-interval",
    "--heapsnapshot-signal",
    "--heapsnapshot-near-heap-limit",
    "--icu-data-dir",
    "--input-type",
    "--max-http-header-size",
    "--openssl-config",
    "--redirect-warnings",
    "--report-dir",
    "--report-directory",
    "--report-filename",
    "--report-signal",
    "--secure-heap",
    "--secure-heap-min",
    "--stack-trace-limit",
    "--title",
    "--tls-cipher-list",
    "--tls-keylog",
    "--trace-event-categories",
    "--trace-event-file-pattern",
    "--unhandled-rejections",
    "--use-largepages",
];

/// Node options that load code before the main program; their value is a
/// module the process runs.
const NODE_PRELOAD: &[&str] = &[
    "--require",
    "-r",
    "--import",
    "--loader",
    "--experimental-loader",
];

/// Node options that take no value and change nothing about which code
/// runs.
const NODE_FLAGS: &[&str] = &[
    "--abort-on-uncaught-exception",
    "--check",
    "-c",
    "--enable-source-maps",
    "--experimental-vm-modules",
    "--expose-gc",
    "--frozen-intrinsics",
    "--no-deprecation",
    "--no-experimental-fetch",
    "--no-extra-info-on-fatal-exception",
    "--no-force-async-hooks-checks",
    "--no-global-search-paths",
    "--no-warnings",
    "--pending-deprecation",
    "--preserve-symlinks",
    "--preserve-symlinks-main",
    "--report-compact",
    "--report-on-fatalerror",
    "--report-on-signal",
    "--report-uncaught-exception",
    "--throw-deprecation",
    "--trace-deprecation",
    "--trace-exit",
    "--trace-sigint",
    "--trace-sync-io",
    "--trace-uncaught",
    "--trace-warnings",
    "--track-heap-objects",
    "--use-bundled-ca",
    "--use-openssl-ca",
    "--zero-fill-buffers",
];

/// Node.js's command line (`src/node_options.cc`): options first, then the
/// script (or `-`), then the script's arguments.
fn node(args: &[&str]) -> Invocation {
    let mut preloads = Vec::new();
    let mut interactive = false;
    let mut inline = false;
    let mut i = 0;
    let parsed = |kind, target: &str, preloads: Vec<String>| Invocation::Parsed {
        kind,
        target: target.to_owned(),
        preloads,
        flags: Vec::new(),
    };
    while let Some(arg) = args.get(i).copied() {
        i += 1;
        if arg == "--" || !arg.starts_with('-') || arg == "-" {
            let script = if arg == "--" {
                args.get(i).copied()
            } else {
                Some(arg)
            };
            if inline {
                return parsed(ProgramKind::Inline, "", preloads);
            }
            if interactive {
                return parsed(ProgramKind::Interactive, "", preloads);
            }
            return match script {
                Some("-") => parsed(ProgramKind::Stdin, "", preloads),
                Some(script) => parsed(ProgramKind::Script, script, preloads),
                None => parsed(ProgramKind::Interactive, "", preloads),
            };
        }
        let (name, attached) = match arg.split_once('=') {
            Some((name, value)) if name.starts_with("--") => (name, Some(value)),
            _ => (arg, None),
        };
        let mut value = || -> Option<String> {
            if let Some(v) = attached {
                return Some(v.to_owned());
            }
            let v = args.get(i).copied()?;
            i += 1;
            Some(v.to_owned())
        };
        match name {
            "-e" | "--eval" | "-p" | "--print" => {
                if value().is_none() {
                    return Invocation::Unparsed(format!("node option {name} needs a value"));
                }
                inline = true;
            }
            "-i" | "--interactive" => interactive = true,
            n if n.starts_with("--inspect") || n.starts_with("--debug") => {
                // A debugger port lets whoever connects run code in the
                // process; `--inspect-port` takes a value.
                if n == "--inspect-port" || n == "--debug-port" {
                    let _ = value();
                }
                interactive = true;
            }
            n if NODE_PRELOAD.contains(&n) => match value() {
                Some(module) => preloads.push(module),
                None => return Invocation::Unparsed(format!("node option {n} needs a value")),
            },
            n if NODE_WITH_VALUE.contains(&n) => {
                if value().is_none() {
                    return Invocation::Unparsed(format!("node option {n} needs a value"));
                }
            }
            n if NODE_FLAGS.contains(&n) && attached.is_none() => {}
            // A V8 or node option written `--name=value` never consumes the
            // next argument, so the script is still found; options above
            // that load code are matched first.
            n if attached.is_some() && !n.contains("env-file") && n != "--run" => {}
            n => {
                return Invocation::Unparsed(format!(
                    "node option {n} is not known to the agent (write it --name=value, or it may take the next argument)"
                ));
            }
        }
    }
    if inline {
        parsed(ProgramKind::Inline, "", preloads)
    } else {
        parsed(ProgramKind::Interactive, "", preloads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(dialect: Dialect, line: &str) -> (Option<ProgramKind>, String) {
        let args: Vec<&str> = line.split(' ').filter(|s| !s.is_empty()).collect();
        match parse(dialect, &args) {
            Invocation::Parsed { kind, target, .. } => (Some(kind), target),
            Invocation::Unparsed(why) => (None, why),
        }
    }

    #[test]
    fn python_command_lines() {
        use ProgramKind::*;
        let cases: &[(&str, Option<ProgramKind>, &str)] = &[
            ("app/main.py", Some(Script), "app/main.py"),
            ("app/main.py -c x", Some(Script), "app/main.py"),
            ("-u -B app/main.py --flag", Some(Script), "app/main.py"),
            ("-uBs app/main.py", Some(Script), "app/main.py"),
            ("-X dev -W ignore app/main.py", Some(Script), "app/main.py"),
            ("-Xdev -Wignore app/main.py", Some(Script), "app/main.py"),
            ("-W app/evil.py app/main.py", Some(Script), "app/main.py"),
            ("-- -weird.py", Some(Script), "-weird.py"),
            ("-m app.main", Some(Module), "app.main"),
            ("-mapp.main x y", Some(Module), "app.main"),
            ("-Im app.main", Some(Module), "app.main"),
            ("-c print(1) app/main.py", Some(Inline), ""),
            ("-Ic print(1)", Some(Inline), ""),
            ("-cprint(1)", Some(Inline), ""),
            ("-", Some(Stdin), ""),
            ("-u - app/main.py", Some(Stdin), ""),
            ("", Some(Interactive), ""),
            ("-u", Some(Interactive), ""),
            ("-i app/main.py", Some(Interactive), "app/main.py"),
            ("-ui -m app", Some(Interactive), "app"),
            (
                "--check-hash-based-pycs always app/main.py",
                Some(Script),
                "app/main.py",
            ),
            (
                "--check-hash-based-pycs=always app/main.py",
                Some(Script),
                "app/main.py",
            ),
        ];
        for (line, want, target) in cases {
            let (got, t) = kind(Dialect::Python, line);
            assert_eq!((got, t.as_str()), (*want, *target), "python {line}");
        }
        for line in [
            "-Z app/main.py",
            "--evil app/main.py",
            "-V",
            "--help",
            "-c",
            "-W",
        ] {
            assert_eq!(kind(Dialect::Python, line).0, None, "python {line}");
        }
        let Invocation::Parsed { flags, .. } = parse(Dialect::Python, &["-IsE", "-P", "a.py"])
        else {
            panic!("parsed")
        };
        assert_eq!(flags, ['I', 's', 'E', 'P']);
    }

    #[test]
    fn node_command_lines() {
        use ProgramKind::*;
        let cases: &[(&str, Option<ProgramKind>, &str)] = &[
            ("app/main.js", Some(Script), "app/main.js"),
            ("app/main.js -e x", Some(Script), "app/main.js"),
            (
                "--max-old-space-size=4096 app/main.js",
                Some(Script),
                "app/main.js",
            ),
            (
                "--title svc --no-warnings app/main.js",
                Some(Script),
                "app/main.js",
            ),
            ("-r ./app/pre.js app/main.js", Some(Script), "app/main.js"),
            ("-- app/main.js", Some(Script), "app/main.js"),
            ("-e 1", Some(Inline), ""),
            ("--eval=1", Some(Inline), ""),
            ("-p 1 app/main.js", Some(Inline), ""),
            ("-", Some(Stdin), ""),
            ("", Some(Interactive), ""),
            ("-i app/main.js", Some(Interactive), ""),
            ("--inspect app/main.js", Some(Interactive), ""),
            ("--inspect-port 9229 app/main.js", Some(Interactive), ""),
        ];
        for (line, want, target) in cases {
            let (got, t) = kind(Dialect::Node, line);
            assert_eq!((got, t.as_str()), (*want, *target), "node {line}");
        }
        for line in [
            "--unknown app/main.js",
            "--env-file=.env app/main.js",
            "--run=x",
            "-r",
        ] {
            assert_eq!(kind(Dialect::Node, line).0, None, "node {line}");
        }
        let Invocation::Parsed { preloads, .. } = parse(
            Dialect::Node,
            &["-r", "./a.js", "--import=./b.mjs", "--loader", "c", "m.js"],
        ) else {
            panic!("parsed")
        };
        assert_eq!(preloads, ["./a.js", "./b.mjs", "c"]);
    }
}
