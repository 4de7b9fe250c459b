//! `POST /v1/predict` bodies, checked before anything reaches the model: the number of inputs,
//! each image's shape, element type, range and finiteness, PNG dimensions before decoding,
//! and each record against the fusion model's schema. Every refusal names the input and
//! what is wrong with it.

use base64::Engine as _;
use serde::Deserialize;
use serde_json::Value;

use super::engine::Inputs;
use crate::data::png::MAX_PNG;
use crate::data::records::{self, Record, Schema};
use crate::detect::validate::BOX_TOLERANCE;
use crate::model::image::IMAGE_SHAPE;

/// A prediction request: exactly one of `inputs`, `png` and `records`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictRequest {
    /// Images as nested arrays of numbers in [0, 1]: `[1, 28, 28]`, `[28, 28]` or 784 values.
    #[serde(default)]
    pub inputs: Option<Vec<Value>>,
    /// 28×28 PNG images, base64-encoded.
    #[serde(default)]
    pub png: Option<Vec<String>>,
    /// Fusion-model records (the JSONL schema without `label`).
    #[serde(default)]
    pub records: Option<Vec<ServeRecord>>,
}

/// One record as a client sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeRecord {
    #[serde(default)]
    pub text: Option<String>,
    #[serde(default)]
    pub bytes_b64: Option<String>,
    #[serde(default)]
    pub network: Option<Vec<f64>>,
}

/// What the model reads.
pub enum Expect<'a> {
    Images,
    Records(&'a Schema),
}

/// Parses and checks a request against what the model reads and the per-request cap.
pub fn parse(body: &[u8], expect: Expect, max_inputs: usize) -> Result<Inputs, String> {
    let req: PredictRequest = serde_json::from_slice(body)
        .map_err(|e| format!("the body is not a prediction request: {e}"))?;
    let given = [
        req.inputs.is_some(),
        req.png.is_some(),
        req.records.is_some(),
    ];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(
            "give exactly one of `inputs` (arrays in [0, 1]), `png` (base64) and `records`".into(),
        );
    }
    let count = req
        .inputs
        .as_ref()
        .map(Vec::len)
        .or(req.png.as_ref().map(Vec::len))
        .or(req.records.as_ref().map(Vec::len))
        .unwrap_or(0);
    if count == 0 {
        return Err("the request holds no inputs".into());
    }
    if count > max_inputs {
        return Err(format!(
            "the request holds {count} inputs; at most {max_inputs} per request (batch.max_inputs)"
        ));
    }
    match (expect, req) {
        (
            Expect::Images,
            PredictRequest {
                inputs: Some(v), ..
            },
        ) => images(&v),
        (Expect::Images, PredictRequest { png: Some(p), .. }) => pngs(&p),
        (
            Expect::Records(schema),
            PredictRequest {
                records: Some(r), ..
            },
        ) => fusion(r, schema),
        (Expect::Images, _) => Err("this model reads images: send `inputs` or `png`".into()),
        (Expect::Records(_), _) => {
            Err("this model reads records: send `records` (text, bytes_b64, network)".into())
        }
    }
}

fn images(v: &[Value]) -> Result<Inputs, String> {
    let d: usize = IMAGE_SHAPE.iter().product();
    let mut values = Vec::with_capacity(v.len() * d);
    for (i, image) in v.iter().enumerate() {
        let mut shape = Vec::new();
        shape_of(image, &mut shape);
        let ok = [vec![1, 28, 28], vec![28, 28], vec![784]];
        if !ok.contains(&shape) {
            return Err(format!(
                "input {i}: shape {shape:?}; an image is [1, 28, 28], [28, 28] or 784 values"
            ));
        }
        let start = values.len();
        flatten(image, &shape, &mut values).map_err(|e| format!("input {i}: {e}"))?;
        debug_assert_eq!(values.len() - start, d);
        check_pixels(&values[start..]).map_err(|e| format!("input {i}: {e}"))?;
    }
    Ok(Inputs::Images { values, n: v.len() })
}

/// The shape along the first element of each level.
fn shape_of(v: &Value, shape: &mut Vec<usize>) {
    if let Value::Array(a) = v {
        shape.push(a.len());
        if let Some(first) = a.first() {
            shape_of(first, shape);
        }
    }
}

/// Appends the numbers of `v`, which must have exactly `shape` at every level.
fn flatten(v: &Value, shape: &[usize], out: &mut Vec<f32>) -> Result<(), String> {
    const RAGGED: &str = "a ragged array; an image is [1, 28, 28], [28, 28] or 784 values";
    match (v, shape.split_first()) {
        (Value::Array(a), Some((n, rest))) if a.len() == *n => {
            a.iter().try_for_each(|x| flatten(x, rest, out))
        }
        (Value::Array(_), _) | (Value::Number(_), Some(_)) => Err(RAGGED.into()),
        (Value::Number(n), None) => {
            let x = n.as_f64().ok_or("a number that is not a float")?;
            out.push(x as f32);
            Ok(())
        }
        (other, _) => Err(format!(
            "holds {} where numbers in [0, 1] belong",
            match other {
                Value::Null => "null",
                Value::Bool(_) => "a boolean",
                Value::String(_) => "a string",
                _ => "an object",
            }
        )),
    }
}

fn check_pixels(p: &[f32]) -> Result<(), String> {
    if let Some((j, x)) = p.iter().enumerate().find(|(_, x)| !x.is_finite()) {
        return Err(format!("value {j} is {x}; pixels must be finite"));
    }
    let tol = BOX_TOLERANCE as f32;
    if let Some((j, x)) = p
        .iter()
        .enumerate()
        .find(|(_, x)| **x < -tol || **x > 1.0 + tol)
    {
        return Err(format!("value {j} is {x}; pixels lie in [0, 1]"));
    }
    Ok(())
}

fn pngs(p: &[String]) -> Result<Inputs, String> {
    let [_, h, w] = IMAGE_SHAPE;
    let mut values = Vec::with_capacity(p.len() * h * w);
    for (i, b64) in p.iter().enumerate() {
        if b64.len() > MAX_PNG * 4 / 3 + 4 {
            return Err(format!("png {i}: larger than {MAX_PNG} bytes"));
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("png {i}: not base64 ({e})"))?;
        values.extend(crate::data::png::decode(bytes).map_err(|e| format!("png {i}: {e}"))?);
    }
    Ok(Inputs::Images { values, n: p.len() })
}

fn fusion(r: Vec<ServeRecord>, schema: &Schema) -> Result<Inputs, String> {
    let mut out = Vec::with_capacity(r.len());
    for (i, s) in r.into_iter().enumerate() {
        let rec = Record {
            text: s.text,
            bytes_b64: s.bytes_b64,
            network: s.network,
            label: 0,
            synthetic: false,
        };
        records::check(&rec, schema).map_err(|e| format!("record {i}: {e}"))?;
        out.push(rec);
    }
    Ok(Inputs::Records(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(v: f64) -> Value {
        serde_json::json!(vec![vec![v; 28]; 28])
    }

    #[test]
    fn refuses_what_is_not_an_image() {
        let body = |inputs: Vec<Value>| {
            serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).unwrap()
        };
        assert!(parse(&body(vec![image(0.5)]), Expect::Images, 4).is_ok());
        let e = parse(&body(vec![image(1.5)]), Expect::Images, 4).unwrap_err();
        assert!(e.contains("input 0") && e.contains("[0, 1]"), "{e}");
        let e = parse(
            &body(vec![serde_json::json!(vec![0.5; 10])]),
            Expect::Images,
            4,
        )
        .unwrap_err();
        assert!(e.contains("shape [10]"), "{e}");
        let mut ragged = image(0.5);
        ragged[3] = serde_json::json!([0.1, 0.2]);
        let e = parse(&body(vec![ragged]), Expect::Images, 4).unwrap_err();
        assert!(e.contains("ragged"), "{e}");
        let mut s = image(0.5);
        s[0][0] = serde_json::json!("NaN");
        let e = parse(&body(vec![s]), Expect::Images, 4).unwrap_err();
        assert!(e.contains("a string"), "{e}");
        let e = parse(&body(vec![image(0.5); 5]), Expect::Images, 4).unwrap_err();
        assert!(e.contains("at most 4"), "{e}");
        let e = parse(b"{\"inputs\": [], \"png\": []}", Expect::Images, 4).unwrap_err();
        assert!(e.contains("exactly one"), "{e}");
        let e = parse(b"[1,2", Expect::Images, 4).unwrap_err();
        assert!(e.contains("not a prediction request"), "{e}");
    }

    #[test]
    fn reads_a_png_and_refuses_a_large_one() {
        let mut png = Vec::new();
        let img = image::GrayImage::from_fn(28, 28, |x, _| image::Luma([(x * 9) as u8]));
        img.write_to(
            &mut std::io::Cursor::new(&mut png),
            image::ImageOutputFormat::Png,
        )
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
        let body = serde_json::to_vec(&serde_json::json!({ "png": [b64] })).unwrap();
        let Inputs::Images { values, n } = parse(&body, Expect::Images, 4).unwrap() else {
            panic!("images expected")
        };
        assert_eq!(n, 1);
        assert_eq!(values[1], 9.0 / 255.0);
        let big = image::GrayImage::new(2000, 2000);
        let mut png = Vec::new();
        big.write_to(
            &mut std::io::Cursor::new(&mut png),
            image::ImageOutputFormat::Png,
        )
        .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&png);
        let body = serde_json::to_vec(&serde_json::json!({ "png": [b64] })).unwrap();
        let e = parse(&body, Expect::Images, 4).unwrap_err();
        assert!(e.contains("png 0"), "{e}");
    }
}
