// illia-noise-v1 in Swift (iOS): the same standard normals as the Python and C++ runtimes for
// the same (seed, stream, sample, element). Spec: illia_export/runtime/noise.py.
import Foundation

enum IlliaNoise {
    static let golden: UInt64 = 0x9E37_79B9_7F4A_7C15

    static func mix64(_ x: UInt64) -> UInt64 {  // SplitMix64 finalizer; &* and &+ wrap mod 2^64
        var z = x
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Key of noise stream `stream` (its position in manifest.noise) for `seed`.
    static func streamKey(seed: UInt64, stream: Int) -> UInt64 {
        mix64(seed &+ golden &* UInt64(stream + 1))
    }

    /// Samples [sampleStart, sampleStart + numSamples) of one stream, `n` elements each (row-major).
    static func standardNormal(seed: UInt64, stream: Int, n: Int, sampleStart: Int, numSamples: Int) -> [Float] {
        let key = streamKey(seed: seed, stream: stream)
        let m = (n + 1) / 2  // counters (element pairs) per sample
        var out = [Float](repeating: 0, count: numSamples * n)
        for s in 0..<numSamples {
            for p in 0..<m {
                let c = UInt64(sampleStart + s) &* UInt64(m) &+ UInt64(p)
                let z = mix64(key &+ golden &* (c &+ 1))
                let u1 = (Double(z >> 40) + 0.5) / 16777216.0
                let u2 = (Double((z >> 16) & 0xFFFFFF) + 0.5) / 16777216.0
                let r = (-2.0 * log(u1)).squareRoot()
                let t = 2.0 * Double.pi * u2
                out[s * n + 2 * p] = Float(r * cos(t))
                if 2 * p + 1 < n { out[s * n + 2 * p + 1] = Float(r * sin(t)) }
            }
        }
        return out
    }
}
