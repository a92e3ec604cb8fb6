// illia-noise-v1 and illia-noise-v2 in Swift (iOS): the same standard normals as the Python and
// C++ runtimes for the same (seed, stream, sample, element). Use the generator the artifact's
// manifest names (`noise_generator`; v1 when absent). Spec: docs/noise.md.
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

    /// illia-noise-v1: samples [sampleStart, sampleStart + numSamples) of one stream, `n` elements each (row-major).
    static func standardNormal(seed: UInt64, stream: Int, n: Int, sampleStart: Int, numSamples: Int) -> [Float] {
        standardNormalKeyed(key: streamKey(seed: seed, stream: stream), n: n, sampleStart: sampleStart, numSamples: numSamples)
    }

    /// Key of one row's noise in a stream (an integer row id is its own 64-bit word).
    static func rowKey(streamKey: UInt64, rowId: Int64) -> UInt64 {
        mix64(streamKey &+ golden &* (UInt64(bitPattern: rowId) &+ 1))
    }

    /// Row-keyed noise (every noise input with a "batch" dim), as every illia runtime feeds it:
    /// per-sample shape [pre..., rows, post...] -> [numSamples, pre, rows, post]; row b is the
    /// stream keyed rowKey(streamKey(seed, stream), rowIds[b]) (rowIds 0..B-1 by default).
    static func standardNormalRows(v2: Bool, seed: UInt64, stream: Int, rowIds: [Int64], pre: Int, post: Int,
                                   sampleStart: Int, numSamples: Int) -> [Float] {
        let key = streamKey(seed: seed, stream: stream)
        let rows = rowIds.count, nRow = pre * post
        var out = [Float](repeating: 0, count: numSamples * pre * rows * post)
        for b in 0..<rows {
            let rk = rowKey(streamKey: key, rowId: rowIds[b])
            let block = v2 ? standardNormalV2Keyed(key: rk, n: nRow, sampleStart: sampleStart, numSamples: numSamples)
                           : standardNormalKeyed(key: rk, n: nRow, sampleStart: sampleStart, numSamples: numSamples)
            for s in 0..<numSamples {
                for a in 0..<pre {
                    let src = s * nRow + a * post, dst = ((s * pre + a) * rows + b) * post
                    out[dst..<dst + post] = block[src..<src + post]
                }
            }
        }
        return out
    }

    static func standardNormalKeyed(key: UInt64, n: Int, sampleStart: Int, numSamples: Int) -> [Float] {
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

    // ------------------------------------------------------------------ illia-noise-v2
    static func lowbias32(_ x0: UInt32) -> UInt32 {  // &* wraps mod 2^32
        var x = x0
        x ^= x >> 16
        x = x &* 0x21F0_AAAD
        x ^= x >> 15
        x = x &* 0x735A_2D97
        return x ^ (x >> 15)
    }

    /// Wichura's AS241 PPND7: the standard normal quantile of p = (j + 0.5) / 2^32 in (0, 1/2).
    static func ppnd7Lower(_ j: UInt32) -> Double {
        let p = (Double(j) + 0.5) / 4294967296.0
        if j >= 322_122_547 {  // p >= 0.075: central region
            let q = p - 0.5
            let r = 0.180625 - q * q
            return q * (((59.109374720 * r + 159.29113202) * r + 50.434271938) * r + 3.3871327179)
                / (((67.187563600 * r + 78.757757664) * r + 17.895169469) * r + 1.0)
        }
        let t = (-log(p)).squareRoot() - 1.6
        return -(((0.17023821103 * t + 1.3067284816) * t + 2.7568153900) * t + 1.4234372777)
            / ((0.12021132975 * t + 0.73700164250) * t + 1.0)
    }

    /// illia-noise-v2: samples [sampleStart, sampleStart + numSamples) of one stream, `n` elements each (row-major).
    static func standardNormalV2(seed: UInt64, stream: Int, n: Int, sampleStart: Int, numSamples: Int) -> [Float] {
        standardNormalV2Keyed(key: streamKey(seed: seed, stream: stream), n: n, sampleStart: sampleStart, numSamples: numSamples)
    }

    static func standardNormalV2Keyed(key: UInt64, n: Int, sampleStart: Int, numSamples: Int) -> [Float] {
        let k0 = UInt32(truncatingIfNeeded: key), k1 = UInt32(truncatingIfNeeded: key >> 32)
        var out = [Float](repeating: 0, count: numSamples * n)
        for e in 0..<(numSamples * n) {
            let c = UInt64(sampleStart) &* UInt64(n) &+ UInt64(e)  // element counter s * n + i
            let kh = k1 &+ 0x9E37_79B9 &* UInt32(truncatingIfNeeded: c >> 32)
            let h = lowbias32(lowbias32(UInt32(truncatingIfNeeded: c) ^ k0) ^ kh)
            let x = ppnd7Lower(h & 0x7FFF_FFFF)
            out[e] = Float(h >> 31 == 1 ? -x : x)
        }
        return out
    }
}
