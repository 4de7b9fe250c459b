//! Encryption at rest: `rampart encrypt` seals a model, every command reads it with the key
//! (from --decrypt-key or the environment) and gives the plaintext's results; without a key,
//! with the wrong key, with one byte changed or the file cut, it refuses with an error naming
//! the file; `decrypt` round-trips; signing covers the encrypted bytes; ensembles take
//! encrypted members and manifests.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{failed, json, ok, reference_path};

/// Runs rampart in `dir` with `env` set and no decryption key inherited.
fn run(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_rampart"));
    cmd.args(args)
        .current_dir(dir)
        .env_remove("RAMPART_DECRYPT_KEY")
        .env_remove("RAMPART_DECRYPT_KEY_FILE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run rampart")
}

fn eval(dir: &Path, model: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut args = vec![
        "eval", "--model", model, "--limit", "64", "--device", "flex",
    ];
    args.extend_from_slice(extra);
    args.push("--json");
    run(dir, &args, env)
}

fn keygen(dir: &Path, name: &str) {
    let private = format!("{name}.txt");
    let public = format!("{name}.pub");
    ok(&run(
        dir,
        &[
            "keygen",
            "--for",
            "encryption",
            "--private",
            &private,
            "--public",
            &public,
        ],
        &[],
    ));
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    let i = at.min(b.len() - 1);
    b[i] ^= 0x40;
    std::fs::write(path, b).unwrap();
}

#[test]
fn an_encrypted_model_loads_only_with_its_key_and_intact() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::copy(reference_path(), p.join("m.safetensors")).unwrap();
    keygen(p, "key");
    keygen(p, "other");
    assert_eq!(common::mode(&p.join("key.txt")), 0o600);
    // A key is never replaced.
    let err = failed(&run(
        p,
        &[
            "keygen",
            "--for",
            "encryption",
            "--private",
            "key.txt",
            "--public",
            "k3.pub",
        ],
        &[],
    ));
    assert!(err.contains("never replaces a key"), "{err}");

    let sealed = json(&run(
        p,
        &[
            "encrypt",
            "m.safetensors",
            "--recipients",
            "key.pub",
            "--json",
        ],
        &[],
    ));
    let bytes = std::fs::read(p.join("m.safetensors.age")).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1\n"));
    let plain = std::fs::read(p.join("m.safetensors")).unwrap();
    // Nothing of the weights shows through: no 64-byte window of the file is in the output.
    assert!(!bytes.windows(64).any(|w| w == &plain[1000..1064]));

    let clear = json(&eval(p, "m.safetensors", &[], &[]));
    let with_flag = json(&eval(
        p,
        "m.safetensors.age",
        &["--decrypt-key", "key.txt"],
        &[],
    ));
    assert_eq!(with_flag["accuracy"], clear["accuracy"]);
    // The model's identity is its plaintext's; the report says so either way.
    assert_eq!(with_flag["model"]["sha256"], clear["model"]["sha256"]);
    assert_eq!(sealed["sha256"], clear["model"]["sha256"]);
    let key_text = std::fs::read_to_string(p.join("key.txt")).unwrap();
    let secret = key_text
        .lines()
        .find(|l| l.starts_with("AGE-SECRET-KEY-PQ-1"))
        .unwrap();
    let from_env = json(&eval(
        p,
        "m.safetensors.age",
        &[],
        &[("RAMPART_DECRYPT_KEY", secret)],
    ));
    assert_eq!(from_env["accuracy"], clear["accuracy"]);
    let from_env_file = json(&eval(
        p,
        "m.safetensors.age",
        &[],
        &[("RAMPART_DECRYPT_KEY_FILE", "key.txt")],
    ));
    assert_eq!(from_env_file["accuracy"], clear["accuracy"]);

    let err = failed(&eval(p, "m.safetensors.age", &[], &[]));
    assert!(
        err.contains("m.safetensors.age") && err.contains("--decrypt-key"),
        "{err}"
    );
    let err = failed(&eval(
        p,
        "m.safetensors.age",
        &["--decrypt-key", "other.txt"],
        &[],
    ));
    assert!(err.contains("encrypted to other keys"), "{err}");
    let err = failed(&eval(
        p,
        "m.safetensors.age",
        &["--decrypt-key", "key.pub"],
        &[],
    ));
    assert!(err.contains("not an age private key"), "{err}");

    // One changed byte in the payload, in the header, or a cut file: refused, never loaded.
    for (name, damage) in [("payload", 0usize), ("header", 1), ("cut", 2)] {
        let copy = p.join(format!("{name}.age"));
        std::fs::copy(p.join("m.safetensors.age"), &copy).unwrap();
        match damage {
            0 => flip(&copy, bytes.len() - 100),
            1 => flip(&copy, 40),
            _ => {
                std::fs::write(&copy, &bytes[..bytes.len() - 70_000]).unwrap();
            }
        }
        let err = failed(&eval(
            p,
            copy.to_str().unwrap(),
            &["--decrypt-key", "key.txt"],
            &[],
        ));
        // A changed header may no longer name this key: age cannot tell that from a wrong key.
        let said = err.contains("corrupt or was changed")
            || (damage == 1 && err.contains("its header was changed"));
        assert!(
            err.contains(&format!("{name}.age")) && said,
            "{name}: {err}"
        );
    }

    // decrypt gives back the very bytes, readable by the owner only.
    ok(&run(
        p,
        &[
            "decrypt",
            "m.safetensors.age",
            "--out",
            "back.safetensors",
            "--decrypt-key",
            "key.txt",
        ],
        &[],
    ));
    assert_eq!(std::fs::read(p.join("back.safetensors")).unwrap(), plain);
    assert_eq!(common::mode(&p.join("back.safetensors")), 0o600);
    // Not twice, not over the input, not something Rampart does not load.
    let err = failed(&run(
        p,
        &[
            "encrypt",
            "m.safetensors.age",
            "--recipients",
            "key.pub",
            "--out",
            "x.age",
        ],
        &[],
    ));
    assert!(err.contains("already encrypted"), "{err}");
    let err = failed(&run(
        p,
        &[
            "encrypt",
            "m.safetensors",
            "--recipients",
            "key.pub",
            "--out",
            "m.safetensors",
        ],
        &[],
    ));
    assert!(err.contains("--out"), "{err}");
    std::fs::write(p.join("notes.txt"), "hello").unwrap();
    let err = failed(&run(
        p,
        &["encrypt", "notes.txt", "--recipients", "key.pub"],
        &[],
    ));
    assert!(err.contains("not a model file"), "{err}");
}

#[test]
fn signatures_cover_the_encrypted_bytes_and_ensembles_take_encrypted_parts() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::copy(reference_path(), p.join("m.safetensors")).unwrap();
    keygen(p, "key");
    ok(&run(
        p,
        &["keygen", "--private", "s.pem", "--public", "s.pub"],
        &[],
    ));
    ok(&run(
        p,
        &["encrypt", "m.safetensors", "--recipients", "key.pub"],
        &[],
    ));
    ok(&run(
        p,
        &["sign", "--key", "s.pem", "m.safetensors.age"],
        &[],
    ));
    let key = ["--decrypt-key", "key.txt"];
    let verified = [key[0], key[1], "--verify-key", "s.pub"];
    ok(&eval(p, "m.safetensors.age", &verified, &[]));
    // A changed byte fails the signature before anything is decrypted.
    let n = std::fs::metadata(p.join("m.safetensors.age"))
        .unwrap()
        .len() as usize;
    flip(&p.join("m.safetensors.age"), n / 2);
    let err = failed(&eval(p, "m.safetensors.age", &verified, &[]));
    assert!(err.contains("signature"), "{err}");

    // An ensemble of encrypted members, its manifest encrypted too.
    ok(&run(
        p,
        &[
            "encrypt",
            "m.safetensors",
            "--recipients",
            "key.pub",
            "--out",
            "a.age",
        ],
        &[],
    ));
    ok(&run(
        p,
        &[
            "encrypt",
            "m.safetensors",
            "--recipients",
            "key.pub",
            "--out",
            "b.age",
        ],
        &[],
    ));
    ok(&run(
        p,
        &[
            "ensemble",
            "create",
            "a.age",
            "b.age",
            "--strategy",
            "mean_logits",
            "--out",
            "ens.toml",
            "--decrypt-key",
            "key.txt",
        ],
        &[],
    ));
    let clear = json(&eval(p, "m.safetensors", &[], &[]));
    let ens = json(&eval(p, "ens.toml", &key, &[]));
    assert_eq!(ens["accuracy"], clear["accuracy"]);
    ok(&run(
        p,
        &["encrypt", "ens.toml", "--recipients", "key.pub"],
        &[],
    ));
    let sealed_manifest = json(&eval(p, "ens.toml.age", &key, &[]));
    assert_eq!(sealed_manifest["accuracy"], clear["accuracy"]);
    assert_eq!(sealed_manifest["model"]["kind"], "ensemble");
    let err = failed(&eval(p, "ens.toml", &[], &[]));
    assert!(
        err.contains("a.age") && err.contains("--decrypt-key"),
        "{err}"
    );
}

/// Runs a program of the `age` reference tool (Go; `scripts/test.sh` installs Debian's).
fn age_tool(dir: &Path, program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{program}: {e}; install the age tool (apt-get install age; scripts/test.sh does)"
            )
        })
}

#[test]
fn the_age_tool_reads_what_rampart_writes_and_the_other_way_round() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    std::fs::copy(reference_path(), p.join("m.safetensors")).unwrap();
    let plain = std::fs::read(p.join("m.safetensors")).unwrap();
    // An X25519 key from age-keygen: the key type every age version reads.
    ok(&age_tool(p, "age-keygen", &["-o", "id.txt"]));
    let recipient = ok(&age_tool(p, "age-keygen", &["-y", "id.txt"]));
    std::fs::write(p.join("id.pub"), &recipient).unwrap();

    ok(&run(
        p,
        &[
            "encrypt",
            "m.safetensors",
            "--recipients",
            "id.pub",
            "--out",
            "r.age",
        ],
        &[],
    ));
    ok(&age_tool(
        p,
        "age",
        &["-d", "-i", "id.txt", "-o", "r.back", "r.age"],
    ));
    assert_eq!(std::fs::read(p.join("r.back")).unwrap(), plain);

    ok(&age_tool(
        p,
        "age",
        &["-r", recipient.trim(), "-o", "a.age", "m.safetensors"],
    ));
    let clear = json(&eval(p, "m.safetensors", &[], &[]));
    let theirs = json(&eval(p, "a.age", &["--decrypt-key", "id.txt"], &[]));
    assert_eq!(theirs["accuracy"], clear["accuracy"]);
    assert_eq!(theirs["model"]["sha256"], clear["model"]["sha256"]);

    // Both tools refuse a copy with one flipped byte.
    let n = std::fs::metadata(p.join("a.age")).unwrap().len() as usize;
    flip(&p.join("a.age"), n - 10);
    assert!(
        !age_tool(p, "age", &["-d", "-i", "id.txt", "-o", "t.back", "a.age"])
            .status
            .success()
    );
    let err = failed(&eval(p, "a.age", &["--decrypt-key", "id.txt"], &[]));
    assert!(err.contains("corrupt or was changed"), "{err}");
}
