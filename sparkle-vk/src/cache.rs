//! The on-disk pipeline cache: compiled pipelines survive the process, so a second run skips the
//! driver's shader compilation. One file per (pipeline-cache UUID, driver version, crate version)
//! in the user cache directory (`SPARKLE_CACHE_DIR` overrides it), written atomically. A file that
//! is truncated, corrupt or from another driver is reported on stderr and ignored, never passed
//! to the driver.

use std::path::PathBuf;
use std::sync::Arc;

use vulkano::device::Device;
use vulkano::pipeline::cache::{PipelineCache, PipelineCacheCreateInfo};

use crate::device::DeviceInfo;

const MAGIC: &[u8; 8] = b"SPKPC\x00\x00\x01";

/// Writes `bytes` to `path` atomically ([`sparkle_files::write_atomic`]: an unguessable temporary
/// in the same folder, then a rename), creating the folder first. Failures are ignored: callers
/// cache things that can be rebuilt.
pub(crate) fn write_atomic(path: &std::path::Path, bytes: &[u8]) {
    if let Some(dir) = path.parent() {
        if std::fs::create_dir_all(dir).is_ok() {
            let _ = sparkle_files::write_atomic(path, |w| w.write_all(bytes));
        }
    }
}

/// Where the cache of `info`'s device lives, if a cache directory is known.
pub(crate) fn path(info: &DeviceInfo) -> Option<PathBuf> {
    let uuid: String = info.pipeline_cache_uuid.iter().map(|b| format!("{b:02x}")).collect();
    Some(sparkle_files::cache_dir()?.join(format!(
        "vk-pipelines-{uuid}-{:08x}-{}.bin",
        info.driver_version,
        env!("CARGO_PKG_VERSION")
    )))
}

/// The payload of a cache file if it is intact and was made by this very driver: our header and
/// checksum, then the Vulkan cache header (vendor, device, pipeline-cache UUID) checked too.
fn payload(bytes: &[u8], info: &DeviceInfo) -> Result<Vec<u8>, &'static str> {
    let rest = bytes.strip_prefix(MAGIC).ok_or("not a sparkle pipeline cache")?;
    if rest.len() < 16 {
        return Err("truncated");
    }
    let len = u64::from_le_bytes(rest[..8].try_into().map_err(|_| "truncated")?);
    let sum = u64::from_le_bytes(rest[8..16].try_into().map_err(|_| "truncated")?);
    let data = &rest[16..];
    if data.len() as u64 != len || sparkle_core::check::fnv1a(data) != sum {
        return Err("truncated or corrupt");
    }
    // VkPipelineCacheHeaderVersionOne: length, version, vendorID, deviceID, UUID.
    if data.len() < 32 {
        return Err("no Vulkan cache header");
    }
    let word = |i: usize| u32::from_le_bytes([data[i], data[i + 1], data[i + 2], data[i + 3]]);
    if word(8) != info.vendor_id || word(12) != info.device_id || data[16..32] != info.pipeline_cache_uuid {
        return Err("made by another device or driver");
    }
    Ok(data.to_vec())
}

/// A pipeline cache primed from disk when a valid file exists (empty otherwise).
pub(crate) fn load(device: &Arc<Device>, info: &DeviceInfo) -> Option<Arc<PipelineCache>> {
    let initial_data = match path(info).map(std::fs::read) {
        Some(Ok(bytes)) => payload(&bytes, info).unwrap_or_else(|why| {
            eprintln!("sparkle: ignoring the Vulkan pipeline cache ({why}); it will be rebuilt");
            Vec::new()
        }),
        _ => Vec::new(),
    };
    let info = PipelineCacheCreateInfo { initial_data, ..Default::default() };
    // SAFETY: the initial data is either empty or bytes this same driver returned from
    // `get_data` (checked: our length and checksum, then the driver's vendor, device and
    // pipeline-cache UUID in its own header), so the driver receives only data it produced.
    unsafe { PipelineCache::new(device.clone(), info) }.ok()
}

/// Writes the cache to disk atomically (temporary file, then rename). Failures are ignored: the
/// cache is an optimisation.
pub(crate) fn save(cache: &PipelineCache, info: &DeviceInfo) {
    let (Some(path), Ok(data)) = (path(info), cache.get_data()) else { return };
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&sparkle_core::check::fnv1a(&data).to_le_bytes());
    bytes.extend_from_slice(&data);
    write_atomic(&path, &bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DeviceInfo {
        DeviceInfo {
            index: 0,
            name: "test".into(),
            vendor_id: 0x10de,
            device_id: 0x2330,
            device_type: "discrete GPU".into(),
            driver_name: None,
            driver_version: 1,
            api_version: "1.3.0".into(),
            uuid: [0; 16],
            pipeline_cache_uuid: [7; 16],
            subgroup_size: Some(32),
            max_shared_memory: 49152,
            max_workgroup_invocations: 1024,
            device_local_bytes: 0,
            cooperative_matrix_f16: true,
            cooperative_matrix_i8: true,
            cooperative_matrix2_f16: false,
            cooperative_matrix2_bf16: false,
            cooperative_matrix_bf16: false,
        }
    }

    fn file(data: &[u8]) -> Vec<u8> {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
        bytes.extend_from_slice(&sparkle_core::check::fnv1a(data).to_le_bytes());
        bytes.extend_from_slice(data);
        bytes
    }

    #[test]
    fn only_intact_files_from_this_driver_are_trusted() {
        let mut vk = vec![32, 0, 0, 0, 1, 0, 0, 0];
        vk.extend_from_slice(&0x10deu32.to_le_bytes());
        vk.extend_from_slice(&0x2330u32.to_le_bytes());
        vk.extend_from_slice(&[7; 16]);
        vk.extend_from_slice(b"driver blob");
        assert_eq!(payload(&file(&vk), &info()).unwrap(), vk);
        let good = file(&vk);
        assert!(payload(&good[..good.len() - 1], &info()).is_err(), "truncated");
        let mut flipped = good.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(payload(&flipped, &info()).is_err(), "corrupt");
        assert!(payload(b"garbage", &info()).is_err());
        let mut other = vk.clone();
        other[16] = 8;
        assert!(payload(&file(&other), &info()).is_err(), "another driver's UUID");
    }
}
