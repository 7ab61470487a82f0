//! `strata completions SHELL`: scripts generated from the clap definitions. Bash loads its script
//! and completes a subcommand; zsh and fish need not be installed: their scripts must name the
//! subcommands and options.

use std::process::Command;

use crate::common::bin;

fn script(shell: &str) -> String {
    let out = Command::new(bin())
        .args(["completions", shell])
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn bash_loads_the_script_and_completes_subcommands_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("strata.bash");
    std::fs::write(&path, script("bash")).unwrap();
    // `_strata` is called as bash calls a completion function: (command, word, previous word).
    let probe = r#"
        source "$1"
        complete -p strata
        COMP_WORDS=(strata ba); COMP_CWORD=1; COMP_LINE="strata ba"; COMP_POINT=${#COMP_LINE}
        _strata strata ba strata
        echo "subcommands: ${COMPREPLY[*]}"
        COMP_WORDS=(strata backup --exc); COMP_CWORD=2; COMP_LINE="strata backup --exc"
        COMP_POINT=${#COMP_LINE}
        _strata strata --exc backup
        echo "options: ${COMPREPLY[*]}"
    "#;
    let out = Command::new("bash")
        .args(["-c", probe, "probe"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("complete -o bashdefault -o default -o nosort -F _strata strata")
            || text.contains("-F _strata strata"),
        "{text}"
    );
    assert!(text.contains("subcommands: backup"), "{text}");
    assert!(text.contains("options: --exclude"), "{text}");
}

#[test]
fn zsh_and_fish_scripts_name_the_subcommands() {
    let zsh = script("zsh");
    assert!(
        zsh.starts_with("#compdef strata"),
        "{}",
        &zsh[..80.min(zsh.len())]
    );
    let fish = script("fish");
    assert!(fish.contains("complete -c strata"));
    for s in [&zsh, &fish] {
        for word in [
            "backup",
            "restore",
            "mount",
            "config",
            "completions",
            "exclude",
            "repo",
        ] {
            assert!(s.contains(word), "{word} missing");
        }
    }
}

#[test]
fn an_unknown_shell_is_a_usage_error() {
    let out = Command::new(bin())
        .args(["completions", "tcsh"])
        .env("XDG_CONFIG_HOME", "/nonexistent")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
