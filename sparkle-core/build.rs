//! Emits `sparkle_arm_dsp` on Arm targets whose architecture always has the DSP extension
//! (SMLAD and friends): Armv7E-M (Cortex-M4/M7). Stable Rust does not expose Arm target features
//! to `cfg`, so the target name decides. Armv8-M Mainline (Cortex-M33) makes DSP optional and is
//! left out: a build there gets the portable kernels. Also emits `sparkle_arm_fpu` on the
//! hard-float Armv7E-M targets (Cortex-M4F/M7: the single-precision FPU and its registers).

fn main() {
    println!("cargo:rustc-check-cfg=cfg(sparkle_arm_dsp)");
    println!("cargo:rustc-check-cfg=cfg(sparkle_arm_fpu)");
    println!("cargo:rerun-if-env-changed=TARGET");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("thumbv7em-") {
        println!("cargo:rustc-cfg=sparkle_arm_dsp");
    }
    // The hard-float Armv7E-M targets have FPv4-SP (or better): `vfma.f32` and 32 `s` registers.
    if target.starts_with("thumbv7em-") && target.ends_with("eabihf") {
        println!("cargo:rustc-cfg=sparkle_arm_fpu");
    }
}
