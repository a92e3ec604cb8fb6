// illia-noise-v1 in Kotlin (Android): the same standard normals as the Python and C++ runtimes
// for the same (seed, stream, sample, element). Spec: illia_export/runtime/noise.py.
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

    /** Samples [sampleStart, sampleStart + numSamples) of one stream, [n] elements each (row-major). */
    fun standardNormal(seed: Long, stream: Int, n: Int, sampleStart: Long, numSamples: Int): FloatArray {
        val key = streamKey(seed, stream)
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
}
