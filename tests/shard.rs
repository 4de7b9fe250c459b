//! Sharded `predict`, `attack` and `evaluate`: the shards' tables merged by `rampart merge` are
//! the unsharded run's, with its figures; a re-run shard keeps its finished table or state, an
//! interrupted attack resumes after its last whole batch; merging refuses shards of different
//! commands or protocols and a shard without its table.

mod common;

use common::{failed, json, ok, rampart, reference_path, serial};

fn read(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

fn predict(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let model = reference_path();
    let mut args = vec![
        "predict",
        "--model",
        model.to_str().unwrap(),
        "--limit",
        "9",
        "--sigma",
        "0.25",
        "--n",
        "200",
        "--alpha",
        "0.01",
        "--device",
        "flex",
    ];
    args.extend_from_slice(extra);
    rampart(&args, dir)
}

#[test]
fn sharded_predictions_merge_into_the_unsharded_run() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let full = json(&predict(p, &["--out", "full.tsv", "--json"]));
    for i in ["0", "1"] {
        ok(&predict(
            p,
            &[
                "--out",
                &format!("p{i}.tsv"),
                "--shard-index",
                i,
                "--shard-count",
                "2",
            ],
        ));
    }
    // Shard 1 holds the 2nd, 4th, ... selected examples.
    let ids: Vec<String> = read(p, "p1.tsv")
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["1", "3", "5", "7"]);
    let merged = json(&rampart(
        &["merge", "--out", "m.tsv", "p1.tsv", "p0.tsv", "--json"],
        p,
    ));
    assert_eq!(read(p, "m.tsv"), read(p, "full.tsv"));
    assert_eq!(merged["run"], "predict");
    for key in ["accuracy", "abstain_rate", "examples"] {
        assert_eq!(merged["merged"]["predict"][key], full[key], "{key}");
    }
    // A finished shard run again keeps its table.
    let again = predict(
        p,
        &[
            "--out",
            "p0.tsv",
            "--shard-index",
            "0",
            "--shard-count",
            "2",
        ],
    );
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("complete for this run"),
        "{again:?}"
    );
    // Another seed is another run; a shard without --out keeps nothing to merge.
    ok(&predict(
        p,
        &[
            "--out",
            "q1.tsv",
            "--shard-index",
            "1",
            "--shard-count",
            "2",
            "--seed",
            "1",
        ],
    ));
    let err = failed(&rampart(
        &["merge", "--out", "x.tsv", "p0.tsv", "q1.tsv"],
        p,
    ));
    assert!(err.contains("differs"), "{err}");
    let err = failed(&predict(p, &["--shard-index", "0", "--shard-count", "2"]));
    assert!(err.contains("--out"), "{err}");
}

fn evaluate(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let model = reference_path();
    let mut args = vec![
        "evaluate",
        "--model",
        model.to_str().unwrap(),
        "--eps",
        "0.05",
        "--version",
        "custom",
        "--attacks",
        "apgd-ce,square",
        "--steps",
        "5",
        "--queries",
        "30",
        "--limit",
        "20",
        "--batch",
        "4",
        "--device",
        "flex",
    ];
    args.extend_from_slice(extra);
    rampart(&args, dir)
}

#[test]
fn sharded_evaluation_merges_into_the_unsharded_run() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let full = json(&evaluate(p, &["--per-example", "full.tsv", "--json"]));
    for i in ["0", "1", "2"] {
        ok(&evaluate(
            p,
            &[
                "--per-example",
                &format!("e{i}.tsv"),
                "--state",
                &format!("e{i}.json"),
                "--shard-index",
                i,
                "--shard-count",
                "3",
            ],
        ));
    }
    // Shards take whole batches of 4: shard 1 has the 2nd and 5th batches.
    let ids: Vec<String> = read(p, "e1.tsv")
        .lines()
        .skip(1)
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["4", "5", "6", "7", "16", "17", "18", "19"]);
    let merged = json(&rampart(
        &[
            "merge", "--out", "m.tsv", "e2.tsv", "e0.tsv", "e1.tsv", "--json",
        ],
        p,
    ));
    // Every row is the unsharded run's: each batch drew the same random numbers.
    assert_eq!(read(p, "m.tsv"), read(p, "full.tsv"));
    let m = &merged["merged"]["evaluate"];
    for key in [
        "clean_accuracy",
        "robust_accuracy",
        "after_each",
        "examples",
        "nan_examples",
    ] {
        assert_eq!(m[key], full[key], "{key}");
    }
    assert_eq!(m["checks"], full["checks"]);
    let gap = (m["max_perturbation"].as_f64().unwrap()
        - full["max_perturbation"].as_f64().unwrap())
    .abs();
    assert!(gap < 1e-6, "max perturbation differs by {gap}");
    // A shard run again with its state file attacks nothing more.
    let again = json(&evaluate(
        p,
        &[
            "--per-example",
            "e1.tsv",
            "--state",
            "e1.json",
            "--shard-index",
            "1",
            "--shard-count",
            "3",
            "--json",
        ],
    ));
    assert_eq!(again["resumed"], 8);
    // Shards of another command, a missing shard, a shard without its table.
    let predicted = predict(
        p,
        &[
            "--out",
            "p1.tsv",
            "--shard-index",
            "1",
            "--shard-count",
            "3",
        ],
    );
    ok(&predicted);
    let err = failed(&rampart(
        &["merge", "--out", "x.tsv", "e0.tsv", "p1.tsv", "e2.tsv"],
        p,
    ));
    assert!(err.contains("p1.tsv is a shard of a predict run"), "{err}");
    let err = failed(&rampart(
        &["merge", "--out", "x.tsv", "e0.tsv", "e2.tsv"],
        p,
    ));
    assert!(err.contains("shard 1 of 3 is missing"), "{err}");
    let err = failed(&evaluate(p, &["--shard-index", "0", "--shard-count", "3"]));
    assert!(err.contains("--per-example"), "{err}");
}

fn attack(dir: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let model = reference_path();
    let mut args = vec![
        "attack",
        "--model",
        model.to_str().unwrap(),
        "--eps",
        "0.05",
        "--attack",
        "fgsm,pgd",
        "--steps",
        "5",
        "--restarts",
        "2",
        "--limit",
        "20",
        "--batch",
        "4",
        "--device",
        "flex",
    ];
    args.extend_from_slice(extra);
    rampart(&args, dir)
}

#[test]
fn sharded_attacks_merge_and_an_interrupted_one_resumes() {
    let _turn = serial();
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path();
    let full = json(&attack(p, &["--per-example", "full.tsv", "--json"]));
    assert_eq!(full["resumed"], 0);
    for i in ["0", "1", "2"] {
        let out = format!("a{i}.tsv");
        ok(&attack(
            p,
            &[
                "--per-example",
                &out,
                "--shard-index",
                i,
                "--shard-count",
                "3",
            ],
        ));
    }
    let merged = json(&rampart(
        &[
            "merge", "--out", "m.tsv", "a1.tsv", "a2.tsv", "a0.tsv", "--json",
        ],
        p,
    ));
    // Random starts are drawn per batch of the whole run, so the rows are the unsharded ones.
    assert_eq!(read(p, "m.tsv"), read(p, "full.tsv"));
    let m = &merged["merged"]["attack"];
    for key in [
        "clean_accuracy",
        "robust_accuracy",
        "after_each",
        "examples",
    ] {
        assert_eq!(m[key], full[key], "{key}");
    }
    // Someone attacked: the table is not all robust.
    assert!(full["robust_accuracy"].as_f64().unwrap() < full["clean_accuracy"].as_f64().unwrap());
    // Interrupted after two of its five batches: the partial table and its description.
    let table = read(p, "full.tsv");
    let head: Vec<&str> = table.lines().take(9).collect();
    std::fs::write(p.join("x.tsv.partial"), head.join("\n") + "\n").unwrap();
    std::fs::copy(
        p.join("full.tsv.shard.json"),
        p.join("x.tsv.partial.shard.json"),
    )
    .unwrap();
    let resumed = json(&attack(p, &["--per-example", "x.tsv", "--json"]));
    assert_eq!(resumed["resumed"], 8);
    assert_eq!(read(p, "x.tsv"), read(p, "full.tsv"));
    assert!(!p.join("x.tsv.partial").exists());
    // Another seed is another run: nothing is resumed from its table.
    let other = json(&attack(
        p,
        &["--per-example", "x.tsv", "--seed", "7", "--json"],
    ));
    assert_eq!(other["resumed"], 0);
    // Examples cannot be saved for batches attacked earlier; a shard must keep its table.
    let err = failed(&attack(
        p,
        &["--per-example", "full.tsv", "--save-examples", "ex"],
    ));
    assert!(err.contains("--save-examples"), "{err}");
    let err = failed(&attack(p, &["--shard-index", "1", "--shard-count", "3"]));
    assert!(err.contains("--per-example"), "{err}");
}

/// The shipped cluster recipes (`deploy/`) run a certification Rampart accepts: the Indexed
/// Job's arguments parse as `rampart certify` with its index filled in, its shard count is its
/// number of completions, the merge is a Job of its own file (applied after the shards, not
/// beside them), and the Slurm array has as many tasks as it has shards.
#[test]
fn the_deploy_recipes_parse_and_agree() {
    use clap::Parser;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let job = std::fs::read_to_string(root.join("kubernetes/certify-indexed-job.yaml")).unwrap();
    assert!(
        !job.contains("\n---"),
        "one Job per file: the merge must not start with the shards"
    );
    let value = |key: &str| -> String {
        let line = job
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap();
        let v = line.trim_start()[key.len()..].trim();
        v.split_whitespace().next().unwrap().to_string()
    };
    let completions = value("completions:");
    let args: Vec<String> = job
        .lines()
        .skip_while(|l| l.trim() != "args:")
        .skip(1)
        .map_while(|l| l.trim().strip_prefix("- "))
        .map(|a| a.replace("$(JOB_COMPLETION_INDEX)", "3"))
        .collect();
    assert_eq!(args[0], "certify");
    assert!(
        args.contains(&format!("--shard-count={completions}")),
        "{args:?}"
    );
    let parsed = rampart::cli::Cli::try_parse_from(std::iter::once("rampart".into()).chain(args));
    assert!(parsed.is_ok(), "{:?}", parsed.err().map(|e| e.to_string()));

    let merge = std::fs::read_to_string(root.join("kubernetes/certify-merge-job.yaml")).unwrap();
    assert!(merge.contains("rampart merge") && merge.contains("/results/shard-*.tsv"));

    let slurm = std::fs::read_to_string(root.join("slurm/certify-array.sh")).unwrap();
    let shards = slurm
        .lines()
        .find_map(|l| l.strip_prefix("SHARDS=${SHARDS:-"))
        .and_then(|l| l.split('}').next())
        .unwrap();
    let last: usize = shards.parse::<usize>().unwrap() - 1;
    assert!(
        slurm.contains(&format!("#SBATCH --array=0-{last}\n")),
        "{slurm}"
    );
    assert!(slurm.contains("--shard-count \"$SHARDS\"") && slurm.contains("afterok"));
}
