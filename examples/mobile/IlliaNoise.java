// illia-noise-v1 and illia-noise-v2 in Java (Android without Kotlin): the same standard normals
// as the Python and C++ runtimes. Java's long/int arithmetic wraps like uint64/uint32; >>> is the
// unsigned shift. Use the generator the artifact's manifest names (`noise_generator`, v1 when
// absent).
// Per-example noise (dropout masks, Flipout signs: every noise input with a "batch" dim) is
// row-keyed in every illia runtime: row b is the generator's stream under
// rowKey(streamKey(seed, k), id_b), with ids 0..B-1 unless the caller has stable ids
// (docs/noise.md, "Row-keyed noise"); standardNormalRows draws it.
// `java IlliaNoise SEED STREAM N SAMPLE_START NUM_SAMPLES [illia-noise-v1|illia-noise-v2]` prints
// the float bits, one a line; `java IlliaNoise rows SEED STREAM IDS PRE POST SAMPLE_START
// NUM_SAMPLES [GENERATOR]` (IDS comma-separated) prints standardNormalRows' (tests/mobile checks
// both against numpy).
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

    /** Key of one row's noise in a stream: its id (an integer id is its own 64-bit word) mixed into the stream key. */
    public static long rowKey(long streamKey, long rowId) {
        return mix64(streamKey + GOLDEN * (rowId + 1));
    }

    /** illia-noise-v1: samples [sampleStart, sampleStart + numSamples) of one stream, n elements each (row-major). */
    public static float[] standardNormal(long seed, int stream, int n, long sampleStart, int numSamples) {
        return standardNormalKeyed(streamKey(seed, stream), n, sampleStart, numSamples);
    }

    /** illia-noise-v1 under a given key (a stream key or a row key). */
    public static float[] standardNormalKeyed(long key, int n, long sampleStart, int numSamples) {
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

    // ---------------------------------------------------------------------- illia-noise-v2
    static int lowbias32(int x) {  // int arithmetic wraps mod 2^32
        x ^= x >>> 16;
        x *= 0x21F0AAAD;
        x ^= x >>> 15;
        x *= 0x735A2D97;
        x ^= x >>> 15;
        return x;
    }

    /** Wichura's AS241 PPND7: the standard normal quantile of p in (0, 1/2), in double. */
    static double ppnd7Lower(long j) {
        double p = (j + 0.5) / 4294967296.0;
        if (j >= 322122547L) {  // p >= 0.075: central region
            double q = p - 0.5, r = 0.180625 - q * q;
            return q * (((59.109374720 * r + 159.29113202) * r + 50.434271938) * r + 3.3871327179)
                    / (((67.187563600 * r + 78.757757664) * r + 17.895169469) * r + 1.0);
        }
        double t = Math.sqrt(-Math.log(p)) - 1.6;
        return -(((0.17023821103 * t + 1.3067284816) * t + 2.7568153900) * t + 1.4234372777)
                / ((0.12021132975 * t + 0.73700164250) * t + 1.0);
    }

    /** illia-noise-v2: samples [sampleStart, sampleStart + numSamples) of one stream, n elements each (row-major). */
    public static float[] standardNormalV2(long seed, int stream, int n, long sampleStart, int numSamples) {
        return standardNormalV2Keyed(streamKey(seed, stream), n, sampleStart, numSamples);
    }

    /** illia-noise-v2 under a given key (a stream key or a row key). */
    public static float[] standardNormalV2Keyed(long key, int n, long sampleStart, int numSamples) {
        int k0 = (int) key, k1 = (int) (key >>> 32);
        float[] out = new float[numSamples * n];
        for (int e = 0; e < numSamples * n; e++) {
            long c = sampleStart * n + e;  // element counter s * n + i
            int h = lowbias32(lowbias32((int) c ^ k0) ^ (k1 + 0x9E3779B9 * (int) (c >>> 32)));
            double x = ppnd7Lower(h & 0x7FFFFFFFL);
            out[e] = (float) (h < 0 ? -x : x);  // h < 0: top bit set
        }
        return out;
    }

    /**
     * Row-keyed noise of stream {@code stream} (a noise input with a "batch" dim), as every illia
     * runtime feeds it: the input's per-sample shape is [pre..., rows, post...] ({@code pre} and
     * {@code post} the element counts of the dims before and after "batch"); the result is
     * [numSamples, pre, rows, post], row b holding samples [sampleStart, sampleStart + numSamples)
     * of the stream keyed rowKey(streamKey(seed, stream), rowIds[b]), pre * post elements each.
     * rowIds: 0..B-1 for a plain batch (the default everywhere), or the rows' stable ids.
     */
    public static float[] standardNormalRows(boolean v2, long seed, int stream, long[] rowIds, int pre, int post,
                                             long sampleStart, int numSamples) {
        long key = streamKey(seed, stream);
        int rows = rowIds.length, nRow = pre * post;
        float[] out = new float[numSamples * pre * rows * post];
        for (int b = 0; b < rows; b++) {
            long rk = rowKey(key, rowIds[b]);
            float[] block = v2 ? standardNormalV2Keyed(rk, nRow, sampleStart, numSamples)
                               : standardNormalKeyed(rk, nRow, sampleStart, numSamples);
            for (int s = 0; s < numSamples; s++)
                for (int a = 0; a < pre; a++)
                    System.arraycopy(block, s * nRow + a * post, out, ((s * pre + a) * rows + b) * post, post);
        }
        return out;
    }

    private static boolean isV2(String[] args, int at) {
        boolean v2 = args.length > at && args[at].equals("illia-noise-v2");
        if (args.length > at && !v2 && !args[at].equals("illia-noise-v1"))
            throw new IllegalArgumentException("unknown noise generator " + args[at]);
        return v2;
    }

    private static void print(float[] v) {
        StringBuilder sb = new StringBuilder();
        for (float f : v) sb.append(Float.floatToRawIntBits(f)).append('\n');
        System.out.print(sb);
    }

    public static void main(String[] args) {
        if (args.length > 0 && args[0].equals("rows")) {
            String[] parts = args[3].split(",");
            long[] ids = new long[parts.length];
            for (int i = 0; i < parts.length; i++) ids[i] = Long.parseLong(parts[i]);
            print(standardNormalRows(isV2(args, 8), Long.parseLong(args[1]), Integer.parseInt(args[2]), ids,
                    Integer.parseInt(args[4]), Integer.parseInt(args[5]), Long.parseLong(args[6]),
                    Integer.parseInt(args[7])));
            return;
        }
        boolean v2 = args.length > 5 && args[5].equals("illia-noise-v2");
        if (args.length > 5 && !v2 && !args[5].equals("illia-noise-v1"))
            throw new IllegalArgumentException("unknown noise generator " + args[5]);
        long seed = Long.parseLong(args[0]);
        int stream = Integer.parseInt(args[1]), n = Integer.parseInt(args[2]), count = Integer.parseInt(args[4]);
        long start = Long.parseLong(args[3]);
        float[] v = v2 ? standardNormalV2(seed, stream, n, start, count) : standardNormal(seed, stream, n, start, count);
        StringBuilder sb = new StringBuilder();
        for (float f : v) sb.append(Float.floatToRawIntBits(f)).append('\n');
        System.out.print(sb);
    }
}
