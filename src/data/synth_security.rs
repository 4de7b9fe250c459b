//! The SYNTHETIC multimodal security task (benign / phishing / malware / exfiltration) that
//! `rampart data synth-security` writes: no real multimodal security set is available here,
//! so this one is seeded, documented and labelled SYNTHETIC wherever it shows.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Normal};

use super::records::{BYTES, BYTES_LEN, NETWORK, Record, TEXT};

const LURE: [&str; 12] = [
    "urgent",
    "verify",
    "account",
    "password",
    "suspended",
    "click",
    "login",
    "confirm",
    "wire",
    "invoice",
    "immediately",
    "credentials",
];
const BUSINESS: [&str; 12] = [
    "meeting",
    "agenda",
    "report",
    "lunch",
    "schedule",
    "team",
    "project",
    "quarterly",
    "notes",
    "draft",
    "review",
    "budget",
];
const NEUTRAL: [&str; 16] = [
    "the", "please", "attached", "see", "for", "your", "today", "thanks", "regards", "with",
    "update", "about", "this", "from", "we", "our",
];

/// A seeded SYNTHETIC security task (benign / phishing / malware / exfiltration) in which each
/// modality alone is only partly informative:
/// - text tells lure from business wording, i.e. whether the class is phishing or
///   exfiltration, and is misleading for `flip` of the records;
/// - bytes tell an executable payload (MZ header, high entropy) from a document, i.e. whether
///   the class is malware or exfiltration, misleading for `flip` of the records;
/// - network flow features shift weakly per class (Gaussian noise of sd 0.2 around
///   class means that differ by 0.15-0.25).
///
/// Text alone can at best tell two pairs of classes apart, and so can bytes; the class needs
/// both, and the network features help break the remaining errors. Each modality is missing
/// with probability `missing` (never all three).
pub fn synth_security(n: usize, seed: u64, flip: f64, missing: f64) -> Vec<Record> {
    let mut rng = StdRng::seed_from_u64(seed);
    let noise = Normal::new(0.0, 0.2).expect("normal");
    (0..n)
        .map(|_| {
            let label = rng.random_range(0..4usize);
            let lure = matches!(label, 1 | 3) ^ (rng.random::<f64>() < flip);
            let payload = matches!(label, 2 | 3) ^ (rng.random::<f64>() < flip);
            let words: Vec<&str> = (0..12)
                .map(|j| {
                    if j % 4 == 0 {
                        let pool = if lure { &LURE } else { &BUSINESS };
                        pool[rng.random_range(0..pool.len())]
                    } else {
                        NEUTRAL[rng.random_range(0..NEUTRAL.len())]
                    }
                })
                .collect();
            let len = rng.random_range(64..=BYTES_LEN);
            let bytes: Vec<u8> = if payload {
                let mut b = vec![b'M', b'Z'];
                b.extend((2..len).map(|_| rng.random::<u8>()));
                b
            } else {
                let alphabet = b"abcdefghijklmnopqrstuvwxyz ,.\n";
                (0..len)
                    .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                    .collect()
            };
            let mut mean = [0.35f64; 8];
            match label {
                1 => {
                    mean[7] += 0.25; // dns_queries
                    mean[0] -= 0.1;
                }
                2 => {
                    mean[5] += 0.25; // interarrival_regularity (beaconing)
                    mean[6] += 0.15;
                }
                3 => {
                    mean[1] += 0.25; // bytes_out
                    mean[0] += 0.15;
                }
                _ => {}
            }
            let network: Vec<f64> = mean
                .iter()
                .map(|m| (m + noise.sample(&mut rng)).clamp(0.0, 1.0))
                .collect();
            let mut keep = [true; 3];
            for k in keep.iter_mut() {
                *k = rng.random::<f64>() >= missing;
            }
            if !keep.iter().any(|k| *k) {
                keep[rng.random_range(0..3)] = true;
            }
            Record {
                text: keep[TEXT].then(|| words.join(" ")),
                bytes_b64: keep[BYTES].then(|| BASE64.encode(&bytes)),
                network: keep[NETWORK].then_some(network),
                label,
                synthetic: true,
            }
        })
        .collect()
}
