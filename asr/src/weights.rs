//! Weight files: safetensors in f32, f16 or bf16, and int8 with one f32 scale per output row (smaller models).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use candle_core::safetensors::Load;
use candle_core::{DType, Device, Tensor};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

/// Suffix of the tensor that holds the per-row scales of an int8 tensor `name`.
pub const SCALE_SUFFIX: &str = ".qscale";
/// Tensors with fewer elements than this stay in floating point when quantizing (norms, biases, small convs).
pub const MIN_QUANTIZED_ELEMENTS: usize = 4096;

/// How a weights file stores its tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WeightFormat {
    F32,
    F16,
    Bf16,
    /// Symmetric int8 per output row (first dimension) for matrices and convolution kernels; the rest stays f32.
    Int8,
}

/// Reads a safetensors buffer (`name` is used in errors) into f32 tensors, dequantizing int8 tensors with their
/// `<name>.qscale` rows.
pub fn load(bytes: &[u8], name: &str, device: &Device) -> Result<HashMap<String, Tensor>> {
    let st = SafeTensors::deserialize(bytes)
        .with_context(|| format!("{name}: not a safetensors file"))?;
    let mut out = HashMap::new();
    for (key, view) in st.tensors() {
        if key.ends_with(SCALE_SUFFIX) {
            continue;
        }
        let tensor = match view.dtype() {
            Dtype::I8 => {
                let scale_key = format!("{key}{SCALE_SUFFIX}");
                let scales = st.tensor(&scale_key).with_context(|| {
                    format!("{name}: int8 tensor {key} has no {scale_key} tensor")
                })?;
                dequantize(&key, &view, &scales)
                    .with_context(|| format!("{name}: tensor {key}"))?
                    .to_device(device)?
            }
            _ => view
                .load(device)
                .with_context(|| format!("{name}: tensor {key}"))?
                .to_dtype(DType::F32)?,
        };
        out.insert(key, tensor);
    }
    Ok(out)
}

fn dequantize(key: &str, q: &TensorView, scales: &TensorView) -> Result<Tensor> {
    let shape = q.shape().to_vec();
    let rows = *shape.first().context("a 0-d int8 tensor")?;
    if scales.dtype() != Dtype::F32 || scales.shape() != [rows] {
        bail!("{key}{SCALE_SUFFIX} must be f32 of shape [{rows}]");
    }
    let scale: Vec<f32> = scales
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let data = q.data();
    let per_row = data.len().checked_div(rows).unwrap_or(0);
    let values: Vec<f32> = data
        .iter()
        .enumerate()
        .map(|(i, &b)| (b as i8) as f32 * scale[i / per_row.max(1)])
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// Serialises tensors in the given format (int8: see [`WeightFormat::Int8`]) as safetensors bytes.
pub fn serialize(tensors: &HashMap<String, Tensor>, format: WeightFormat) -> Result<Vec<u8>> {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    // (name, dtype, shape, bytes)
    let mut parts: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for name in names {
        let t = &tensors[name];
        let shape = t.dims().to_vec();
        let flat: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let quantize = format == WeightFormat::Int8
            && shape.len() >= 2
            && flat.len() >= MIN_QUANTIZED_ELEMENTS;
        if quantize {
            let (q, scale) = quantize_rows(&flat, shape[0]);
            parts.push((name.clone(), Dtype::I8, shape.clone(), q));
            parts.push((
                format!("{name}{SCALE_SUFFIX}"),
                Dtype::F32,
                vec![shape[0]],
                scale.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ));
            continue;
        }
        let (dtype, bytes): (Dtype, Vec<u8>) = match format {
            WeightFormat::F32 | WeightFormat::Int8 => (
                Dtype::F32,
                flat.iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
            WeightFormat::F16 => (
                Dtype::F16,
                flat.iter()
                    .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
            WeightFormat::Bf16 => (
                Dtype::BF16,
                flat.iter()
                    .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                    .collect(),
            ),
        };
        parts.push((name.clone(), dtype, shape, bytes));
    }
    let views = parts
        .iter()
        .map(|(n, d, s, b)| Ok((n.as_str(), TensorView::new(*d, s.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()?;
    let mut metadata = HashMap::new();
    metadata.insert(
        "mezcla_weights".to_string(),
        format!("{format:?}").to_lowercase(),
    );
    Ok(safetensors::serialize(views, Some(metadata))?)
}

/// Symmetric int8 quantization of each of `rows` equal rows: scale = max |w| / 127, q = round(w / scale).
pub fn quantize_rows(values: &[f32], rows: usize) -> (Vec<u8>, Vec<f32>) {
    let per_row = values.len() / rows.max(1);
    let mut q = Vec::with_capacity(values.len());
    let mut scales = Vec::with_capacity(rows);
    for row in values.chunks(per_row.max(1)) {
        let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        scales.push(scale);
        q.extend(
            row.iter()
                .map(|v| ((v / scale).round().clamp(-127.0, 127.0) as i8) as u8),
        );
    }
    (q, scales)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> HashMap<String, Tensor> {
        let dev = Device::Cpu;
        let big: Vec<f32> = (0..64 * 80)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0 - 1.0) * (1 + i / 80) as f32)
            .collect();
        let mut m = HashMap::new();
        m.insert(
            "w".to_string(),
            Tensor::from_vec(big, (64, 80), &dev).unwrap(),
        );
        m.insert(
            "b".to_string(),
            Tensor::from_vec(vec![0.1f32, -2.5, 3.25], 3, &dev).unwrap(),
        );
        m
    }

    #[test]
    fn every_format_reads_back_with_its_precision() {
        let src = sample();
        for (fmt, tol) in [
            (WeightFormat::F32, 0.0),
            (WeightFormat::F16, 1e-3),
            (WeightFormat::Bf16, 8e-3),
            (WeightFormat::Int8, 0.5 / 127.0),
        ] {
            let bytes = serialize(&src, fmt).unwrap();
            let back = load(&bytes, "x", &Device::Cpu).unwrap();
            assert_eq!(back.len(), 2, "{fmt:?}: the scales are not tensors");
            for (k, t) in &src {
                let a: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
                let b: Vec<f32> = back[k].flatten_all().unwrap().to_vec1().unwrap();
                assert_eq!(back[k].dims(), t.dims());
                // Relative to the row's largest magnitude (int8) or the value (floats).
                let per_row = a.len() / t.dims()[0];
                for (i, (x, y)) in a.iter().zip(&b).enumerate() {
                    let row = &a[i / per_row * per_row..(i / per_row + 1) * per_row];
                    let scale = if fmt == WeightFormat::Int8 && k == "w" {
                        row.iter().fold(0f32, |m, v| m.max(v.abs()))
                    } else {
                        x.abs().max(1e-6)
                    };
                    assert!(
                        (x - y).abs() <= tol * scale * 1.0001 + 1e-7,
                        "{fmt:?} {k}[{i}]: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn int8_halves_f16_size_and_keeps_small_tensors_exact() {
        let src = sample();
        let f16 = serialize(&src, WeightFormat::F16).unwrap().len();
        let int8 = serialize(&src, WeightFormat::Int8).unwrap();
        assert!(int8.len() * 10 < f16 * 6, "{} vs {f16}", int8.len());
        let back = load(&int8, "x", &Device::Cpu).unwrap();
        let b: Vec<f32> = back["b"].to_vec1().unwrap();
        assert_eq!(b, vec![0.1f32, -2.5, 3.25]);
    }

    #[test]
    fn an_int8_tensor_without_scales_is_an_error_naming_it() {
        let q = [1u8, 2, 3, 4];
        let view = TensorView::new(Dtype::I8, vec![2, 2], &q).unwrap();
        let bytes = safetensors::serialize(vec![("enc.w", view)], None).unwrap();
        let err = load(&bytes, "m.safetensors", &Device::Cpu)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("m.safetensors") && err.contains("enc.w.qscale"),
            "{err}"
        );
    }
}
