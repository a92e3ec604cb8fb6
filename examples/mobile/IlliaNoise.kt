// illia-noise-v1 and illia-noise-v2 in Kotlin (Android): the same standard normals as the Python
// and C++ runtimes for the same (seed, stream, sample, element). Use the generator the
// artifact's manifest names (`noise_generator`; v1 when absent). Spec: docs/noise.md.
import kotlin.math.PI
import kotlin.math.cos
import kotlin.math.ln
import kotlin.math.sin
import kotlin.math.sqrt

object IlliaNoise {
    private const val GOLDEN = 0x9E3779B97F4A7C15uL

    private fun mix64(x: ULong): ULong {  // SplitMix64 finalizer; ULong wraps mod 2^64
        var z = x
        z = (z xor (z shr 30)) * 0xBF58476D1CE4E5B9uL
        z = (z xor (z shr 27)) * 0x94D049BB133111EBuL
        return z xor (z shr 31)
    }

    /** Key of noise stream [stream] (its position in manifest.noise) for [seed] >= 0. */
    fun streamKey(seed: Long, stream: Int): ULong = mix64(seed.toULong() + GOLDEN * (stream + 1).toULong())

    /** illia-noise-v1: samples [sampleStart, sampleStart + numSamples) of one stream, [n] elements each (row-major). */
    fun standardNormal(seed: Long, stream: Int, n: Int, sampleStart: Long, numSamples: Int): FloatArray =
        standardNormalKeyed(streamKey(seed, stream), n, sampleStart, numSamples)

    /** Key of one row's noise in a stream (an integer row id is its own 64-bit word). */
    fun rowKey(streamKey: ULong, rowId: Long): ULong = mix64(streamKey + GOLDEN * (rowId.toULong() + 1uL))

    fun standardNormalKeyed(key: ULong, n: Int, sampleStart: Long, numSamples: Int): FloatArray {
        val m = (n + 1) / 2                       // counters (element pairs) per sample
        val out = FloatArray(numSamples * n)
        for (s in 0 until numSamples) {
            for (p in 0 until m) {
                val c = (sampleStart + s).toULong() * m.toULong() + p.toULong()
                val z = mix64(key + GOLDEN * (c + 1uL))
                val u1 = ((z shr 40).toDouble() + 0.5) / 16777216.0
                val u2 = (((z shr 16) and 0xFFFFFFuL).toDouble() + 0.5) / 16777216.0
                val r = sqrt(-2.0 * ln(u1))
                val t = 2.0 * PI * u2
                out[s * n + 2 * p] = (r * cos(t)).toFloat()
                if (2 * p + 1 < n) out[s * n + 2 * p + 1] = (r * sin(t)).toFloat()
            }
        }
        return out
    }

    // ------------------------------------------------------------------ illia-noise-v2
    private fun lowbias32(x0: UInt): UInt {  // UInt wraps mod 2^32
        var x = x0
        x = x xor (x shr 16)
        x *= 0x21F0AAADu
        x = x xor (x shr 15)
        x *= 0x735A2D97u
        return x xor (x shr 15)
    }

    /** Wichura's AS241 PPND7: the standard normal quantile of p = (j + 0.5) / 2^32 in (0, 1/2). */
    private fun ppnd7Lower(j: Long): Double {
        val p = (j + 0.5) / 4294967296.0
        if (j >= 322122547L) {  // p >= 0.075: central region
            val q = p - 0.5
            val r = 0.180625 - q * q
            return q * (((59.109374720 * r + 159.29113202) * r + 50.434271938) * r + 3.3871327179) /
                (((67.187563600 * r + 78.757757664) * r + 17.895169469) * r + 1.0)
        }
        val t = sqrt(-ln(p)) - 1.6
        return -(((0.17023821103 * t + 1.3067284816) * t + 2.7568153900) * t + 1.4234372777) /
            ((0.12021132975 * t + 0.73700164250) * t + 1.0)
    }

    /** illia-noise-v2: samples [sampleStart, sampleStart + numSamples) of one stream, [n] elements each (row-major). */
    fun standardNormalV2(seed: Long, stream: Int, n: Int, sampleStart: Long, numSamples: Int): FloatArray =
        standardNormalV2Keyed(streamKey(seed, stream), n, sampleStart, numSamples)

    /**
     * Row-keyed noise (every noise input with a "batch" dim), as every illia runtime feeds it:
     * per-sample shape [pre..., rows, post...] -> [numSamples, pre, rows, post]; row b is the
     * stream keyed rowKey(streamKey(seed, stream), rowIds[b]) (rowIds 0..B-1 by default).
     */
    fun standardNormalRows(v2: Boolean, seed: Long, stream: Int, rowIds: LongArray, pre: Int, post: Int,
                           sampleStart: Long, numSamples: Int): FloatArray {
        val key = streamKey(seed, stream)
        val rows = rowIds.size
        val nRow = pre * post
        val out = FloatArray(numSamples * pre * rows * post)
        for (b in 0 until rows) {
            val rk = rowKey(key, rowIds[b])
            val block = if (v2) standardNormalV2Keyed(rk, nRow, sampleStart, numSamples)
                        else standardNormalKeyed(rk, nRow, sampleStart, numSamples)
            for (s in 0 until numSamples) for (a in 0 until pre)
                System.arraycopy(block, s * nRow + a * post, out, ((s * pre + a) * rows + b) * post, post)
        }
        return out
    }

    fun standardNormalV2Keyed(key: ULong, n: Int, sampleStart: Long, numSamples: Int): FloatArray {
        val k0 = key.toUInt()
        val k1 = (key shr 32).toUInt()
        val out = FloatArray(numSamples * n)
        for (e in 0 until numSamples * n) {
            val c = sampleStart.toULong() * n.toULong() + e.toULong()  // element counter s * n + i
            val h = lowbias32(lowbias32(c.toUInt() xor k0) xor (k1 + 0x9E3779B9u * (c shr 32).toUInt()))
            val x = ppnd7Lower((h and 0x7FFFFFFFu).toLong())
            out[e] = (if (h shr 31 == 1u) -x else x).toFloat()
        }
        return out
    }
}
