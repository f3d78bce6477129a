//! Command buffers and their submission to one queue: each submission is chained after the one
//! before (so an op may read what a still-running submission writes, and vulkano orders every
//! buffer access across them), and returns at once with a future to wait on.

use std::sync::{Arc, Mutex};

use vulkano::command_buffer::allocator::StandardCommandBufferAllocator;
use vulkano::command_buffer::{AutoCommandBufferBuilder, CommandBufferUsage, PrimaryAutoCommandBuffer};
use vulkano::device::{Device, DeviceOwned, Queue};
use vulkano::sync::future::FenceSignalFuture;
use vulkano::sync::{self, GpuFuture};

use crate::error::{api, Result};

/// The future of one submission, shared by its [`Pending`] handle and the context's chain.
pub(crate) type Submission = Arc<FenceSignalFuture<Box<dyn GpuFuture + Send + Sync>>>;

/// The previous submission as the next one is chained after it. Vulkano's `execute_after`
/// asks a future `queue_change_allowed()` and then `queue()`, each under its own lock; a
/// `FenceSignalFuture` that another thread waits on in between has been cleaned up by then and
/// answers `None`, and vulkano panics on it (seen with several threads on one context). Every
/// submission of a context goes to its one queue, so this answers with that queue, consistently,
/// and passes everything else through.
struct After {
    prev: Submission,
    queue: Arc<vulkano::device::Queue>,
}

// SAFETY: the device is the wrapped future's own.
unsafe impl DeviceOwned for After {
    fn device(&self) -> &Arc<vulkano::device::Device> {
        self.prev.device()
    }
}

// SAFETY: every method forwards to the `Arc<FenceSignalFuture>` implementation (which upholds the
// trait's contract) except `queue` and `queue_change_allowed`, which report the one queue every
// submission of the context is made to: true of the wrapped future while it is pending, and
// harmless once it is cleaned up (nothing is left to order against then).
unsafe impl GpuFuture for After {
    fn cleanup_finished(&mut self) {
        self.prev.cleanup_finished()
    }
    unsafe fn build_submission(
        &self,
    ) -> std::result::Result<vulkano::sync::future::SubmitAnyBuilder, vulkano::Validated<vulkano::VulkanError>> {
        // SAFETY: forwarded; the caller upholds build_submission's contract for us.
        unsafe { self.prev.build_submission() }
    }
    fn flush(&self) -> std::result::Result<(), vulkano::Validated<vulkano::VulkanError>> {
        self.prev.flush()
    }
    unsafe fn signal_finished(&self) {
        // SAFETY: forwarded; the caller upholds signal_finished's contract for us.
        unsafe { self.prev.signal_finished() }
    }
    fn queue_change_allowed(&self) -> bool {
        false
    }
    fn queue(&self) -> Option<Arc<vulkano::device::Queue>> {
        Some(self.queue.clone())
    }
    fn check_buffer_access(
        &self,
        buffer: &vulkano::buffer::Buffer,
        range: std::ops::Range<vulkano::DeviceSize>,
        exclusive: bool,
        queue: &vulkano::device::Queue,
    ) -> std::result::Result<(), vulkano::sync::future::AccessCheckError> {
        self.prev.check_buffer_access(buffer, range, exclusive, queue)
    }
    fn check_image_access(
        &self,
        image: &vulkano::image::Image,
        range: std::ops::Range<vulkano::DeviceSize>,
        exclusive: bool,
        expected_layout: vulkano::image::ImageLayout,
        queue: &vulkano::device::Queue,
    ) -> std::result::Result<(), vulkano::sync::future::AccessCheckError> {
        self.prev.check_image_access(image, range, exclusive, expected_layout, queue)
    }
    fn check_swapchain_image_acquired(
        &self,
        swapchain: &vulkano::swapchain::Swapchain,
        image_index: u32,
        before: bool,
    ) -> std::result::Result<(), vulkano::sync::future::AccessCheckError> {
        self.prev.check_swapchain_image_acquired(swapchain, image_index, before)
    }
}

/// Records and submits command buffers to one queue, each after the one before.
pub(crate) struct Submitter {
    queue: Arc<Queue>,
    commands: Arc<StandardCommandBufferAllocator>,
    /// The latest submission: the next one is chained after it.
    last: Mutex<Option<Submission>>,
}

impl std::fmt::Debug for Submitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submitter").finish_non_exhaustive()
    }
}

impl Submitter {
    /// Submits to `queue` with command buffers from a new allocator on `device`.
    pub(crate) fn new(device: Arc<Device>, queue: Arc<Queue>) -> Self {
        let commands = Arc::new(StandardCommandBufferAllocator::new(device, Default::default()));
        Submitter { queue, commands, last: Mutex::default() }
    }

    pub(crate) fn begin(&self) -> Result<AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>> {
        AutoCommandBufferBuilder::primary(
            self.commands.clone(),
            self.queue.queue_family_index(),
            CommandBufferUsage::OneTimeSubmit,
        )
        .map_err(api("beginning a command buffer"))
    }

    /// Submits `cb` after everything submitted before on this queue (chained futures: the
    /// device may run it as soon as its inputs are written) and returns without waiting.
    pub(crate) fn submit(&self, cb: AutoCommandBufferBuilder<PrimaryAutoCommandBuffer>) -> Result<Submission> {
        let cb = cb.build().map_err(api("building the command buffer"))?;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let before: Box<dyn GpuFuture + Send + Sync> = match last.take() {
            Some(f) if !f.is_signaled().unwrap_or(true) => Box::new(After { prev: f, queue: self.queue.clone() }),
            _ => sync::now(self.queue.device().clone()).boxed_send_sync(),
        };
        let future = before
            .then_execute(self.queue.clone(), cb)
            .map_err(api("submitting"))?
            .boxed_send_sync()
            .then_signal_fence_and_flush()
            .map_err(api("flushing"))?;
        let future = Arc::new(future);
        *last = Some(future.clone());
        Ok(future)
    }
}
