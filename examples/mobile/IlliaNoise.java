// illia-noise-v1 in Java (Android without Kotlin): the same standard normals as the Python and
// C++ runtimes. Java's long arithmetic wraps mod 2^64 like uint64; >>> is the unsigned shift.
// `java IlliaNoise SEED STREAM N SAMPLE_START NUM_SAMPLES` prints the float bits, one a line
// (tests/mobile checks them against numpy).
public final class IlliaNoise {
    private static final long GOLDEN = 0x9E3779B97F4A7C15L;

    private IlliaNoise() {}

    static long mix64(long z) {
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return z ^ (z >>> 31);
    }

    /** Key of noise stream {@code stream} (its position in manifest.noise) for {@code seed} >= 0. */
    public static long streamKey(long seed, int stream) {
        return mix64(seed + GOLDEN * (stream + 1L));
    }

    /** Samples [sampleStart, sampleStart + numSamples) of one stream, n elements each (row-major). */
    public static float[] standardNormal(long seed, int stream, int n, long sampleStart, int numSamples) {
        long key = streamKey(seed, stream);
        int m = (n + 1) / 2;  // counters (element pairs) per sample
        float[] out = new float[numSamples * n];
        for (int s = 0; s < numSamples; s++) {
            for (int p = 0; p < m; p++) {
                long c = (sampleStart + s) * m + p;
                long z = mix64(key + GOLDEN * (c + 1));
                double u1 = ((double) (z >>> 40) + 0.5) / 16777216.0;
                double u2 = ((double) ((z >>> 16) & 0xFFFFFFL) + 0.5) / 16777216.0;
                double r = Math.sqrt(-2.0 * Math.log(u1));
                double t = 2.0 * Math.PI * u2;
                out[s * n + 2 * p] = (float) (r * Math.cos(t));
                if (2 * p + 1 < n) out[s * n + 2 * p + 1] = (float) (r * Math.sin(t));
            }
        }
        return out;
    }

    public static void main(String[] args) {
        float[] v = standardNormal(Long.parseLong(args[0]), Integer.parseInt(args[1]), Integer.parseInt(args[2]),
                Long.parseLong(args[3]), Integer.parseInt(args[4]));
        StringBuilder sb = new StringBuilder();
        for (float f : v) sb.append(Float.floatToRawIntBits(f)).append('\n');
        System.out.print(sb);
    }
}
