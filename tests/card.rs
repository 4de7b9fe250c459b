//! `rampart card`: a security model card whose figures are those of the runs it cites.

mod common;

use common::{failed, ok, rampart, reference_path, serial};
use rampart::signing::{self, keys::PublicKey};

#[test]
fn a_card_shows_the_figures_of_the_runs_it_cites_and_refuses_foreign_ones() {
    let _turn = serial();
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path();
    let model = reference_path();
    let m = model.to_str().unwrap();
    let eval = ok(&rampart(
        &["eval", "--model", m, "--limit", "300", "--json"],
        p,
    ));
    std::fs::write(p.join("eval.json"), &eval).unwrap();
    let certify = ok(&rampart(
        &[
            "certify", "--model", m, "--sigma", "0.25", "--n0", "20", "--n", "200", "--limit", "4",
            "--json",
        ],
        p,
    ));
    std::fs::write(p.join("certify.json"), &certify).unwrap();
    let eval: serde_json::Value = serde_json::from_str(&eval).unwrap();
    let certify: serde_json::Value = serde_json::from_str(&certify).unwrap();
    // Reports record the command that made them.
    assert!(
        eval["command"]
            .as_str()
            .unwrap()
            .starts_with("rampart eval --model")
    );
    ok(&rampart(
        &["keygen", "--private", "k.pem", "--public", "k.pub"],
        p,
    ));
    ok(&rampart(
        &[
            "card",
            "--model",
            m,
            "--evaluation",
            "eval.json,certify.json",
            "--out",
            "card.md",
            "--json-out",
            "card.json",
            "--sign-key",
            "k.pem",
        ],
        p,
    ));
    let card = std::fs::read_to_string(p.join("card.md")).unwrap();
    // The front matter is YAML written as JSON: it parses, and its figures are the runs'.
    let front = card
        .strip_prefix("---\n")
        .unwrap()
        .split("\n---\n")
        .next()
        .unwrap();
    let front: serde_json::Value = serde_json::from_str(front).unwrap();
    let metrics = front["model-index"][0]["results"][0]["metrics"]
        .as_array()
        .unwrap();
    let clean = metrics
        .iter()
        .find(|x| x["name"] == "clean accuracy")
        .unwrap();
    let accuracy = eval["accuracy"].as_f64().unwrap();
    assert!((clean["value"].as_f64().unwrap() - 100.0 * accuracy).abs() < 1e-9);
    let certified: Vec<&serde_json::Value> = metrics
        .iter()
        .filter(|x| x["type"] == "certified_accuracy")
        .collect();
    let pairs = certify["summary"]["certified_accuracy"].as_array().unwrap();
    assert_eq!(certified.len(), pairs.len());
    for (metric, pair) in certified.iter().zip(pairs) {
        assert_eq!(metric["args"]["radius"], pair[0]);
        assert!(
            (metric["value"].as_f64().unwrap() - 100.0 * pair[1].as_f64().unwrap()).abs() < 1e-9
        );
        assert_eq!(metric["args"]["n"], 200);
    }
    // The Markdown names the model's digest, cites each command, and says what is missing.
    let sha = eval["model"]["sha256"].as_str().unwrap();
    assert!(card.contains(sha));
    assert!(card.contains(eval["command"].as_str().unwrap()));
    assert!(card.contains(&format!("{:.2}%", 100.0 * accuracy)));
    assert!(card.contains("Signature: unsigned"));
    assert!(card.contains("no robustness evaluation is recorded"));
    assert!(card.contains("reduced protocol"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p.join("card.json")).unwrap()).unwrap();
    assert_eq!(json["runs"].as_array().unwrap().len(), 2);
    // The card is signed.
    let key = PublicKey::load(&p.join("k.pub")).unwrap();
    signing::verify(
        &p.join("card.md"),
        &key,
        &p.join("k.pub"),
        &p.join("card.md.sig"),
        &[],
    )
    .unwrap();
    // A report about another model, and a file that is not a report, are refused by name.
    let mut other = eval.clone();
    other["model"]["sha256"] = serde_json::Value::String("ab".repeat(32));
    std::fs::write(p.join("other.json"), other.to_string()).unwrap();
    std::fs::write(p.join("list.json"), "[1, 2]").unwrap();
    // Hostile reports: a rate above 1, a digest that is not ASCII: refused, no panic.
    let mut above = eval.clone();
    above["accuracy"] = serde_json::json!(1.5);
    std::fs::write(p.join("above.json"), above.to_string()).unwrap();
    let mut odd = eval.clone();
    odd["model"]["sha256"] = serde_json::Value::String("aéééééééééééé".into());
    std::fs::write(p.join("odd.json"), odd.to_string()).unwrap();
    for (file, expected) in [
        ("other.json", "another model"),
        ("list.json", "not a Rampart report"),
        ("above.json", "not a rate"),
        ("odd.json", "another model"),
    ] {
        let err = failed(&rampart(
            &[
                "card",
                "--model",
                m,
                "--evaluation",
                file,
                "--out",
                "card2.md",
            ],
            p,
        ));
        assert!(err.contains(file) && err.contains(expected), "{err}");
    }
    // The card never replaces something that is not a card.
    let err = failed(&rampart(
        &[
            "card",
            "--model",
            m,
            "--evaluation",
            "eval.json",
            "--out",
            "eval.json",
        ],
        p,
    ));
    assert!(err.contains("eval.json") && err.contains("--out"), "{err}");
}
