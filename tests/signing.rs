//! Model signing in the OpenSSF format: round trips, every kind of tampering refused with the
//! file named, the Python tool's own signature verified, streamed digests, and verification
//! before loading.

mod common;

use std::path::Path;

use common::{failed, ok, rampart, reference_path, serial};
use rampart::signing::keys::{Curve, PrivateKey, PublicKey};
use rampart::signing::manifest::{self, compare_names, hash_file};
use rampart::signing::{self, SignError};
use sha2::{Digest, Sha256};

fn model_dir(root: &Path) -> std::path::PathBuf {
    let dir = root.join("model");
    std::fs::create_dir_all(dir.join("sub")).unwrap();
    std::fs::write(dir.join("weights.bin"), vec![7u8; 5000]).unwrap();
    std::fs::write(dir.join("sub/config.json"), b"{\"arch\": \"cnn\"}\n").unwrap();
    std::fs::write(dir.join("a.txt"), b"a").unwrap();
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("a/b"), b"b").unwrap();
    dir
}

fn keys(curve: Curve, dir: &Path, name: &str) -> (PrivateKey, std::path::PathBuf) {
    let key = PrivateKey::generate(curve);
    let public = dir.join(format!("{name}.pub"));
    signing::keys::write_pair(&key, &dir.join(format!("{name}.pem")), &public).unwrap();
    (key, public)
}

fn verify(model: &Path, public: &Path, sig: &Path) -> Result<signing::Signed, SignError> {
    signing::verify(model, &PublicKey::load(public).unwrap(), public, sig, &[])
}

#[test]
fn a_signed_directory_verifies_and_every_tampering_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = model_dir(tmp.path());
    for curve in [Curve::P256, Curve::P384] {
        let (key, public) = keys(curve, tmp.path(), &format!("{curve:?}"));
        let sig = dir.join("model.sig");
        let signed = signing::sign(&dir, &key, &sig, &[]).unwrap();
        // Component-wise order, the signature file left out.
        let names: Vec<&str> = signed.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a/b", "a.txt", "sub/config.json", "weights.bin"]);
        assert!(signed.ignored.contains(&"model.sig".to_string()));
        let again = verify(&dir, &public, &sig).unwrap();
        assert_eq!(again.digest, signed.digest);
        assert_eq!(
            again.digest,
            signing::keys::hex(&manifest::root_digest(&signed.entries))
        );
    }
    let (key, public) = keys(Curve::P256, tmp.path(), "main");
    let sig = dir.join("model.sig");
    signing::sign(&dir, &key, &sig, &[]).unwrap();
    let err = |r: Result<signing::Signed, SignError>| r.expect_err("refused").to_string();
    // A flipped byte in each file names that file.
    for name in ["weights.bin", "sub/config.json", "a/b"] {
        let path = dir.join(name);
        let original = std::fs::read(&path).unwrap();
        let mut flipped = original.clone();
        flipped[0] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        let e = err(verify(&dir, &public, &sig));
        assert!(e.contains(&format!("{name} has changed")), "{e}");
        std::fs::write(&path, &original).unwrap();
    }
    // A missing file, an added file.
    std::fs::rename(dir.join("a.txt"), tmp.path().join("a.txt")).unwrap();
    let e = err(verify(&dir, &public, &sig));
    assert!(e.contains("a.txt is missing"), "{e}");
    std::fs::rename(tmp.path().join("a.txt"), dir.join("a.txt")).unwrap();
    std::fs::write(dir.join("sub/extra.bin"), b"x").unwrap();
    let e = err(verify(&dir, &public, &sig));
    assert!(e.contains("sub/extra.bin is not in the signature"), "{e}");
    std::fs::remove_file(dir.join("sub/extra.bin")).unwrap();
    verify(&dir, &public, &sig).unwrap();
    // A symbolic link anywhere, even in an ignored .git folder, is refused by name.
    std::fs::create_dir_all(dir.join(".git")).unwrap();
    std::os::unix::fs::symlink(dir.join("a.txt"), dir.join(".git/link")).unwrap();
    let e = err(verify(&dir, &public, &sig));
    assert!(
        e.contains(".git/link") && e.contains("symbolic link"),
        "{e}"
    );
    std::fs::remove_dir_all(dir.join(".git")).unwrap();
    std::fs::write(dir.join(".gitignore"), b"ignored at the top level").unwrap();
    verify(&dir, &public, &sig).unwrap();
    std::fs::remove_file(dir.join(".gitignore")).unwrap();
    // Another key: named by the hint; with the hint removed, the signature itself fails.
    let (_, other) = keys(Curve::P256, tmp.path(), "other");
    let e = err(verify(&dir, &other, &sig));
    assert!(e.contains("another key") && e.contains("other.pub"), "{e}");
    let text = std::fs::read_to_string(&sig).unwrap();
    let hint = PublicKey::load(&public).unwrap().hint();
    let unhinted = tmp.path().join("unhinted.sig");
    std::fs::write(
        &unhinted,
        text.replace(&format!("{{\"hint\":\"{hint}\"}}"), "{}"),
    )
    .unwrap();
    verify(&dir, &public, &unhinted).unwrap();
    let e = err(verify(&dir, &other, &unhinted));
    assert!(e.contains("does not verify with"), "{e}");
    // A truncated signature, and a changed statement under the old signature.
    let cut = tmp.path().join("cut.sig");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let e = err(verify(&dir, &public, &cut));
    assert!(e.contains("cut.sig: not a model signature"), "{e}");
    let bundle: serde_json::Value = serde_json::from_str(&text).unwrap();
    let payload = bundle["dsseEnvelope"]["payload"].as_str().unwrap();
    let mut statement = signing::bundle::decode(payload).unwrap();
    let at = statement
        .windows(11)
        .position(|w| w == b"weights.bin")
        .unwrap();
    statement[at] = b'W';
    let forged = text.replace(payload, &signing::bundle::encode(&statement));
    let forged_path = tmp.path().join("forged.sig");
    std::fs::write(&forged_path, forged).unwrap();
    let e = err(verify(&dir, &public, &forged_path));
    assert!(e.contains("does not verify with"), "{e}");
}

#[test]
fn a_signature_made_by_the_python_tool_verifies_and_its_files_are_checked() {
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/python-signed");
    let public = fixture.join("key.pub");
    let signed = verify(&fixture.join("model"), &public, &fixture.join("model.sig")).unwrap();
    assert_eq!(
        signed.digest,
        "0a2f365440efc3c287b6ce95e3bb27d2626e81c31d53694c599682af924d7049"
    );
    // The same signature over a copy with one byte changed names the file.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("model");
    std::fs::create_dir_all(copy.join("sub")).unwrap();
    for f in ["weights.bin", "sub/config.json"] {
        std::fs::copy(fixture.join("model").join(f), copy.join(f)).unwrap();
    }
    verify(&copy, &public, &fixture.join("model.sig")).unwrap();
    let mut bytes = std::fs::read(copy.join("weights.bin")).unwrap();
    bytes[1234] ^= 0x80;
    std::fs::write(copy.join("weights.bin"), bytes).unwrap();
    let e = verify(&copy, &public, &fixture.join("model.sig"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("weights.bin has changed"), "{e}");
}

#[test]
fn a_high_s_signature_verifies_as_the_reference_accepts_it() {
    use p256::ecdsa::Signature;
    let key = PrivateKey::generate(Curve::P256);
    let message = b"DSSEv1 28 application/vnd.in-toto+json 2 {}";
    let der = key.sign(message);
    let sig = Signature::from_der(&der).unwrap();
    let (r, s) = sig.split_scalars();
    let flipped = Signature::from_scalars(r.to_bytes(), (-*s).to_bytes()).unwrap();
    // Exactly one of the two is high-S; both verify.
    assert_ne!(sig.normalize_s().is_some(), flipped.normalize_s().is_some());
    let public = key.public();
    assert!(public.verify(message, &der));
    assert!(public.verify(message, flipped.to_der().as_bytes()));
    assert!(!public.verify(b"another message", &der));
    assert!(!public.verify(message, &der[..der.len() - 1]));
}

#[test]
fn names_sort_component_by_component_and_large_files_hash_in_constant_memory() {
    let mut names = vec!["a.txt", "a/b", "b", "a", "é.txt", "a/b/c"];
    names.sort_by(|a, b| compare_names(a, b));
    assert_eq!(names, ["a", "a/b", "a/b/c", "a.txt", "b", "é.txt"]);
    // A 512 MiB sparse file: its digest equals a chunked one, and resident memory grows by
    // far less than the file.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("big.bin");
    let size: u64 = 512 << 20;
    std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    let before = peak_rss_kib();
    let digest = hash_file(&path).unwrap();
    let growth_mib = (peak_rss_kib() - before) / 1024;
    let mut hasher = Sha256::new();
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..(size >> 20) {
        hasher.update(&zeros);
    }
    assert_eq!(digest, <[u8; 32]>::from(hasher.finalize()));
    assert!(
        growth_mib < 64,
        "peak resident memory grew by {growth_mib} MiB"
    );
}

/// Peak resident set size of this process, KiB.
fn peak_rss_kib() -> i64 {
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_maxrss
}

#[test]
fn the_command_line_signs_verifies_and_refuses_to_load_an_unsigned_or_changed_model() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let model = p.join("m.safetensors");
    std::fs::copy(reference_path(), &model).unwrap();
    let m = model.to_str().unwrap();
    ok(&rampart(
        &["keygen", "--private", "k.pem", "--public", "k.pub"],
        p,
    ));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(p.join("k.pem")).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);
    // A signature never replaces a key or another file.
    let err = failed(&rampart(
        &["sign", "--key", "k.pem", "--signature", "./k.pem", m],
        p,
    ));
    assert!(err.contains("k.pem"), "{err}");
    let err = failed(&rampart(
        &["keygen", "--private", "k.pem", "--public", "k2.pub"],
        p,
    ));
    assert!(
        err.contains("k.pem") && err.contains("never replaces"),
        "{err}"
    );
    // Loading with a key: refused while unsigned, accepted once signed.
    let eval = |env_key: bool| {
        let mut args = vec!["eval", "--model", m, "--limit", "20"];
        if !env_key {
            args.extend(["--verify-key", "k.pub"]);
        }
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_rampart"));
        cmd.args(&args).current_dir(p);
        if env_key {
            cmd.env("RAMPART_VERIFY_KEY", p.join("k.pub"));
        }
        cmd.output().unwrap()
    };
    let err = failed(&eval(false));
    assert!(
        err.contains("no signature") && err.contains("m.safetensors.sig"),
        "{err}"
    );
    ok(&rampart(&["sign", "--key", "k.pem", m], p));
    assert!(p.join("m.safetensors.sig").exists());
    ok(&rampart(&["verify", "--key", "k.pub", m], p));
    ok(&eval(false));
    ok(&eval(true));
    // One flipped byte in the weights: verify and every loader name the file.
    let mut bytes = std::fs::read(&model).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&model, bytes).unwrap();
    for out in [rampart(&["verify", "--key", "k.pub", m], p), eval(true)] {
        let err = failed(&out);
        // A single-file model's one entry is named ".", as the reference names it.
        assert!(err.contains(". has changed"), "{err}");
        assert!(err.contains("m.safetensors"), "{err}");
    }
}

#[test]
fn an_ensemble_signed_as_a_directory_loads_only_while_every_member_matches() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let d = p.join("ens");
    std::fs::create_dir_all(&d).unwrap();
    for m in ["a.safetensors", "b.safetensors"] {
        std::fs::copy(reference_path(), d.join(m)).unwrap();
    }
    ok(&rampart(
        &[
            "ensemble",
            "create",
            "--strategy",
            "mean_probs",
            "--out",
            "ens/ens.toml",
            "ens/a.safetensors",
            "ens/b.safetensors",
        ],
        p,
    ));
    ok(&rampart(
        &["keygen", "--private", "k.pem", "--public", "k.pub"],
        p,
    ));
    ok(&rampart(&["sign", "--key", "k.pem", "ens"], p));
    assert!(d.join("model.sig").exists());
    let eval = || {
        rampart(
            &[
                "eval",
                "--model",
                "ens/ens.toml",
                "--limit",
                "20",
                "--verify-key",
                "k.pub",
            ],
            p,
        )
    };
    ok(&eval());
    let mut bytes = std::fs::read(d.join("b.safetensors")).unwrap();
    bytes.push(0);
    std::fs::write(d.join("b.safetensors"), bytes).unwrap();
    let err = failed(&eval());
    assert!(err.contains("b.safetensors has changed"), "{err}");
}
