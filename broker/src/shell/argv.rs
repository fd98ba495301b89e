//! The request checks and the jail's command line, pure.

use std::ffi::OsString;

use super::{AllowEntry, JailTools, ShellError, ShellLimits, ShellRequest, ShellSettings};

/// Checks a request against the settings and returns the canonical path of
/// the program to run.
///
/// The program must be absolute and equal (byte for byte, no lookup) to an
/// allowlist entry as configured or as canonicalised; the arguments must be
/// within `max_args` and `max_arg_bytes`; nothing may hold a NUL byte; every
/// environment name must be granted; stdin must be within `max_stdin`.
///
/// # Errors
///
/// The [`ShellError`] variant naming the first violation found.
pub fn validate(
    settings: &ShellSettings,
    allow: &[AllowEntry],
    req: &ShellRequest,
) -> Result<String, ShellError> {
    if !settings.enabled {
        return Err(ShellError::Disabled);
    }
    let limits = &settings.limits;
    if req.program.contains('\0') {
        return Err(ShellError::NulByte {
            what: "the program".to_owned(),
        });
    }
    if !req.program.starts_with('/') {
        return Err(ShellError::RelativeProgram {
            program: req.program.clone(),
        });
    }
    let program = allow
        .iter()
        .find(|e| e.configured == req.program || e.canonical == req.program)
        .map(|e| e.canonical.clone())
        .ok_or_else(|| ShellError::ProgramNotAllowed {
            program: req.program.clone(),
        })?;
    if req.args.len() > limits.max_args {
        return Err(ShellError::TooManyArgs {
            count: req.args.len(),
            max: limits.max_args,
        });
    }
    for (index, arg) in req.args.iter().enumerate() {
        if arg.len() > limits.max_arg_bytes {
            return Err(ShellError::ArgTooLong {
                index,
                len: arg.len(),
                max: limits.max_arg_bytes,
            });
        }
        if arg.contains('\0') {
            return Err(ShellError::NulByte {
                what: format!("argument {index}"),
            });
        }
    }
    for name in &req.env {
        match settings.env.get(name) {
            None => {
                return Err(ShellError::EnvNotGranted { name: name.clone() });
            }
            Some(value) if value.contains('\0') || name.contains(['\0', '=']) => {
                return Err(ShellError::NulByte {
                    what: format!("environment variable {name:?}"),
                });
            }
            Some(_) => {}
        }
    }
    if let Some(stdin) = &req.stdin
        && stdin.len() > limits.max_stdin
    {
        return Err(ShellError::StdinTooLong {
            len: stdin.len(),
            max: limits.max_stdin,
        });
    }
    Ok(program)
}

/// The full command line of the jail for a checked program and arguments.
/// `run_as` is the uid and gid to drop to (only when the node is root).
pub fn command_line(
    tools: &JailTools,
    limits: &ShellLimits,
    run_as: Option<(u32, u32)>,
    program: &str,
    args: &[String],
) -> Vec<OsString> {
    let mut line: Vec<OsString> = Vec::new();
    if let Some((uid, gid)) = run_as {
        line.push(tools.setpriv.clone().into());
        line.push(format!("--reuid={uid}").into());
        line.push(format!("--regid={gid}").into());
        line.push("--clear-groups".into());
        line.push("--pdeathsig=KILL".into());
        line.push("--".into());
    }
    line.push(tools.unshare.clone().into());
    for flag in [
        "--user",
        "--map-root-user",
        "--mount",
        "--pid",
        "--net",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
    ] {
        line.push(flag.into());
    }
    line.push(tools.prlimit.clone().into());
    line.push(format!("--cpu={}", limits.cpu_secs).into());
    line.push(format!("--as={}", limits.memory_bytes).into());
    line.push(format!("--nofile={}", limits.open_files).into());
    line.push(format!("--nproc={}", limits.processes).into());
    line.push("--".into());
    line.push(program.into());
    line.extend(args.iter().map(OsString::from));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> (ShellSettings, Vec<AllowEntry>) {
        let s = ShellSettings {
            enabled: true,
            allow: vec!["/bin/echo".into()],
            env: [("LANG".to_owned(), "C".to_owned())].into(),
            ..ShellSettings::default()
        };
        let allow = vec![AllowEntry {
            configured: "/bin/echo".to_owned(),
            canonical: "/usr/bin/echo".to_owned(),
        }];
        (s, allow)
    }

    fn req(program: &str, args: &[&str]) -> ShellRequest {
        ShellRequest {
            program: program.to_owned(),
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            ..ShellRequest::default()
        }
    }

    #[test]
    fn configured_and_canonical_paths_pass_and_run_the_canonical_file() {
        let (s, a) = settings();
        assert_eq!(
            validate(&s, &a, &req("/bin/echo", &[])).unwrap(),
            "/usr/bin/echo"
        );
        assert_eq!(
            validate(&s, &a, &req("/usr/bin/echo", &[])).unwrap(),
            "/usr/bin/echo"
        );
    }

    #[test]
    fn disabled_settings_refuse() {
        let (mut s, a) = settings();
        s.enabled = false;
        assert!(matches!(
            validate(&s, &a, &req("/bin/echo", &[])),
            Err(ShellError::Disabled)
        ));
    }

    #[test]
    fn other_programs_and_near_misses_are_refused() {
        let (s, a) = settings();
        for p in [
            "/bin/sh",
            "/bin/echo/",
            "/bin//echo",
            "/bin/./echo",
            "/bin/echo ",
        ] {
            assert!(
                matches!(
                    validate(&s, &a, &req(p, &[])),
                    Err(ShellError::ProgramNotAllowed { .. })
                ),
                "{p}"
            );
        }
        for p in ["echo", "bin/echo", "./echo", ""] {
            assert!(
                matches!(
                    validate(&s, &a, &req(p, &[])),
                    Err(ShellError::RelativeProgram { .. })
                ),
                "{p}"
            );
        }
        assert!(matches!(
            validate(&s, &a, &req("/bin/echo\0", &[])),
            Err(ShellError::NulByte { .. })
        ));
    }

    #[test]
    fn argument_limits_and_nul_bytes() {
        let (mut s, a) = settings();
        s.limits.max_args = 2;
        s.limits.max_arg_bytes = 3;
        assert!(validate(&s, &a, &req("/bin/echo", &["abc", "de"])).is_ok());
        assert!(matches!(
            validate(&s, &a, &req("/bin/echo", &["a", "b", "c"])),
            Err(ShellError::TooManyArgs { count: 3, max: 2 })
        ));
        assert!(matches!(
            validate(&s, &a, &req("/bin/echo", &["a", "abcd"])),
            Err(ShellError::ArgTooLong {
                index: 1,
                len: 4,
                max: 3
            })
        ));
        assert!(matches!(
            validate(&s, &a, &req("/bin/echo", &["a\0"])),
            Err(ShellError::NulByte { .. })
        ));
    }

    #[test]
    fn only_granted_env_names_and_bounded_stdin() {
        let (mut s, a) = settings();
        s.limits.max_stdin = 4;
        let mut r = req("/bin/echo", &[]);
        r.env = vec!["LANG".to_owned()];
        assert!(validate(&s, &a, &r).is_ok());
        r.env = vec!["LANG".to_owned(), "HOME".to_owned()];
        assert!(matches!(
            validate(&s, &a, &r),
            Err(ShellError::EnvNotGranted { name }) if name == "HOME"
        ));
        r.env.clear();
        r.stdin = Some("abcd".to_owned());
        assert!(validate(&s, &a, &r).is_ok());
        r.stdin = Some("abcde".to_owned());
        assert!(matches!(
            validate(&s, &a, &r),
            Err(ShellError::StdinTooLong { len: 5, max: 4 })
        ));
    }

    fn strs(line: &[OsString]) -> Vec<&str> {
        line.iter().map(|s| s.to_str().unwrap()).collect()
    }

    #[test]
    fn command_line_as_root_drops_to_the_given_uid() {
        let limits = ShellLimits {
            cpu_secs: 3,
            memory_bytes: 1000,
            open_files: 20,
            processes: 16,
            ..ShellLimits::default()
        };
        let line = command_line(
            &JailTools::default(),
            &limits,
            Some((65534, 65533)),
            "/usr/bin/echo",
            &["$(id)".to_owned(), ";".to_owned(), "|".to_owned()],
        );
        assert_eq!(
            strs(&line),
            [
                "/usr/bin/setpriv",
                "--reuid=65534",
                "--regid=65533",
                "--clear-groups",
                "--pdeathsig=KILL",
                "--",
                "/usr/bin/unshare",
                "--user",
                "--map-root-user",
                "--mount",
                "--pid",
                "--net",
                "--fork",
                "--kill-child",
                "--mount-proc",
                "--",
                "/usr/bin/prlimit",
                "--cpu=3",
                "--as=1000",
                "--nofile=20",
                "--nproc=16",
                "--",
                "/usr/bin/echo",
                "$(id)",
                ";",
                "|",
            ]
        );
    }

    #[test]
    fn command_line_without_root_has_no_setpriv() {
        let line = command_line(
            &JailTools::default(),
            &ShellLimits::default(),
            None,
            "/usr/bin/env",
            &[],
        );
        let line = strs(&line);
        assert_eq!(line.first(), Some(&"/usr/bin/unshare"));
        assert_eq!(line.last(), Some(&"/usr/bin/env"));
        assert!(!line.contains(&"/usr/bin/setpriv"));
    }
}
