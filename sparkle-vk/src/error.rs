//! Errors of the Vulkan backend: never a panic, always a `Result` with the cause attached.

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong talking to Vulkan.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VkError {
    /// No Vulkan loader (libvulkan) could be opened on this machine.
    #[error("no Vulkan loader: {0}")]
    NoLoader(#[source] Source),
    /// The loader works but reports no device with a compute queue (or the index is out of range).
    #[error("no usable Vulkan compute device ({found} found)")]
    NoDevice {
        /// Devices found.
        found: usize,
    },
    /// Device memory ran out.
    #[error("Vulkan device out of memory: {0}")]
    OutOfMemory(#[source] Source),
    /// The device was lost (driver reset, GPU hang).
    #[error("Vulkan device lost: {0}")]
    DeviceLost(#[source] Source),
    /// Input rejected by the core's validation.
    #[error("{0}")]
    Core(#[from] sparkle_core::Error),
    /// A setting from the environment is invalid (it says which).
    #[error("{0}")]
    Config(String),
    /// Any other Vulkan or vulkano failure, with what was being done.
    #[error("Vulkan error while {what}: {source}")]
    Api {
        /// The step that failed.
        what: &'static str,
        /// vulkano's error.
        source: Source,
    },
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
