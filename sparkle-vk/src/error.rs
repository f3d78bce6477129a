//! Errors of the Vulkan backend: never a panic, always a `Result` with the cause attached.

use std::fmt;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong talking to Vulkan.
#[derive(Debug)]
#[non_exhaustive]
pub enum VkError {
    /// No Vulkan loader (libvulkan) could be opened on this machine.
    NoLoader(Source),
    /// The loader works but reports no device with a compute queue (or the index is out of range).
    NoDevice {
        /// Devices found.
        found: usize,
    },
    /// Device memory ran out.
    OutOfMemory(Source),
    /// The device was lost (driver reset, GPU hang).
    DeviceLost(Source),
    /// Input rejected by the core's validation.
    Core(sparkle_core::Error),
    /// Any other Vulkan or vulkano failure, with what was being done.
    Api {
        /// The step that failed.
        what: &'static str,
        /// vulkano's error.
        source: Source,
    },
}

impl fmt::Display for VkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VkError::NoLoader(e) => write!(f, "no Vulkan loader: {e}"),
            VkError::NoDevice { found } => write!(f, "no usable Vulkan compute device ({found} found)"),
            VkError::OutOfMemory(e) => write!(f, "Vulkan device out of memory: {e}"),
            VkError::DeviceLost(e) => write!(f, "Vulkan device lost: {e}"),
            VkError::Core(e) => write!(f, "{e}"),
            VkError::Api { what, source } => write!(f, "Vulkan error while {what}: {source}"),
        }
    }
}

impl std::error::Error for VkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VkError::NoLoader(e) | VkError::OutOfMemory(e) | VkError::DeviceLost(e) => Some(e.as_ref()),
            VkError::Api { source, .. } => Some(source.as_ref()),
            VkError::Core(e) => Some(e),
            VkError::NoDevice { .. } => None,
        }
    }
}

impl From<sparkle_core::Error> for VkError {
    fn from(e: sparkle_core::Error) -> Self {
        VkError::Core(e)
    }
}

/// Classifies a vulkano error: out-of-memory and device-lost get their own variants so callers
/// (the juggler's fallback) can react; everything else keeps the step that failed.
pub(crate) fn api<E>(what: &'static str) -> impl FnOnce(E) -> VkError
where
    E: std::error::Error + Send + Sync + 'static,
{
    move |e| {
        let text = format!("{e:?}");
        let source: Source = Box::new(e);
        if text.contains("OutOfDeviceMemory") || text.contains("OutOfHostMemory") {
            VkError::OutOfMemory(source)
        } else if text.contains("DeviceLost") {
            VkError::DeviceLost(source)
        } else {
            VkError::Api { what, source }
        }
    }
}

/// Shorthand.
pub type Result<T> = std::result::Result<T, VkError>;
