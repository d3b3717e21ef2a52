// A stride-1 SAME convolution in bf16 as one GEMM that reads its patches in place from the
// zero-padded input (no im2col). The GEMM's rows are the output positions in padded-width order
// (each output row runs on over the kernel-1 padding columns: those rows are computed and
// dropped), so row q = oh·pw + ow and kernel row kh's patch values (kw, c) are one contiguous run
// of the padded input from pixel q + kh·pw: every row of a k-block sits `channels` values after
// the one before. K is each kernel row's run padded to a 32-k block; B holds the weights in that
// order with zero rows in the padding, so a value read there (the next pixels, or zeros) adds 0.
//
// Where a kernel row's run is whole k-blocks (kernel · channels a multiple of 32), the blocks hold
// im2col's values in its order: the bits of im2col's GEMM. A padded run regroups the sums (AMX's
// instruction does not add a block's pairs one at a time), still within the fp32 bound. The
// input gradient is this conv of the padded output gradient with the weights flipped and
// transposed (`Window.flipTranspose`): its sums over taps and output channels one chain per element.

import CBF16

public struct ImplicitConv: Equatable, Sendable {
    /// The image read (the conv's input, or its output gradient) and its zero border.
    public var height, width, channels, kernel, padTop, padLeft: Int

    /// The forward pass of a stride-1 SAME conv `g`.
    public init(forward g: Window) {
        height = g.inH; width = g.inW; channels = g.channels; kernel = g.kernel; padTop = g.padTop; padLeft = g.padLeft
    }

    /// Its input gradient: the output gradient ([outH, outW, cout]) padded so that the flipped
    /// kernel's taps land where the forward's came from.
    public init(inputGradientOf g: Window, cout: Int) {
        height = g.outH; width = g.outW; channels = cout; kernel = g.kernel
        padTop = g.kernel - 1 - g.padTop; padLeft = g.kernel - 1 - g.padLeft
    }

    /// Whether a bf16 conv `g` takes this path: stride 1, SAME, and either a direct conv's
    /// channels (16: im2col would pad each patch's K of 144 to 160 and copy it, and fp32's direct
    /// kernel is not a bf16 unit) or the im2col GEMM's own K (each kernel row's run a whole number
    /// of k-blocks) with at most 1/8 more rows.
    public static func applies(_ g: Window, cout: Int) -> Bool {
        guard g.stride == 1, g.outH == g.inH, g.outW == g.inW, g.kernel > 1 else { return false }
        if DirectConv.applies(g, cout: cout) { return true }
        let c = ImplicitConv(forward: g)
        let im2colRows = (g.positions + 31) / 32 * 32
        return g.kernel * g.channels % 32 == 0 && 8 * c.rows <= 9 * im2colRows
    }

    /// Padded width: the image's columns and the border's.
    public var paddedWidth: Int { width + kernel - 1 }
    /// The GEMM's rows: every output row over the padded width, to whole 32-row panels.
    public var rows: Int { (height * paddedWidth + 31) / 32 * 32 }
    /// One kernel row's K: its kernel · channels values, to a whole 32-k block.
    public var rowK: Int { (kernel * channels + 31) / 32 * 32 }
    /// The GEMM's K: a run per kernel row.
    public var k: Int { kernel * rowK }
    public var blocks: Int { k / 32 }

    /// bf16 values of the padded input: its rows, then zeros as far as the last row of the last
    /// panel reads (its last kernel row's run padded to rowK), to a whole cache line.
    public var paddedValues: Int {
        let read = (rows - 1 + (kernel - 1) * paddedWidth) * channels + rowK
        return max(read, (height + kernel - 1) * paddedWidth * channels + 32) / 32 * 32 + 32
    }
    /// Floats of scratch `pad` writes.
    public var paddedFloats: Int { paddedValues / 2 }

    /// Where k-block kb of every row starts, relative to the row's first value: kernel row
    /// kb / (rowK / 32) is paddedWidth pixels further per step.
    public func offsets(into o: UnsafeMutablePointer<Int>) {
        let perRow = rowK / 32
        for kb in 0..<blocks { o[kb] = (kb / perRow) * paddedWidth * channels + (kb % perRow) * 32 }
    }

    /// `x` ([height, width, channels]) rounded to bf16 into `dst` with its zero border: padTop rows
    /// and padLeft columns before, zeros after (`paddedValues` in all).
    public func pad(_ x: UnsafePointer<Float>, into dst: UnsafeMutablePointer<UInt16>) {
        let pw = paddedWidth, c = channels, rowValues = width * c
        let first = (padTop * pw + padLeft) * c
        dst.update(repeating: 0, count: first)
        // Each image row, then zeros to the next row's first pixel: the right border and the next
        // row's left border.
        pt_bf16_pack_rows(x, rowValues, Int32(height), Int32(rowValues), dst + first, pw * c)
        let end = first + (height - 1) * pw * c + pw * c
        (dst + end).update(repeating: 0, count: paddedValues - end)
    }

    /// y[h, w] = c[h · paddedWidth + w] (`columns` floats a pixel): the GEMM's rows without the
    /// padding columns.
    public func compact(_ c: UnsafePointer<Float>, columns: Int, into y: UnsafeMutablePointer<Float>) {
        let run = width * columns
        for h in 0..<height { (y + h * run).update(from: c + h * paddedWidth * columns, count: run) }
    }

    /// Packs conv weights w ([kernel][kernel][cin][cout], cin = `channels`) as the GEMM's B: a run
    /// of kernel · cin rows per kernel row, each zero-padded to rowK.
    public func packWeights(_ w: UnsafePointer<Float>, cout: Int, into packed: UnsafeMutablePointer<Float>) {
        let run = kernel * channels
        GemmBF16.packSegmentsB(segments: kernel, rows: run, segmentK: rowK, n: cout,
                               run: { MatrixView(w + $0 * run * cout, rowStride: cout, colStride: 1) }, into: packed)
    }
    /// Floats of `packWeights`'s B.
    public func packedWeightsFloats(cout: Int) -> Int { GemmBF16.packedBFloats(k: k, n: cout) }

    /// Floats of scratch `run` takes: the padded copy, then the GEMM's rows of `n` channels.
    public func scratchFloats(n: Int) -> Int { paddedFloats + rows * n }

    /// The conv of `image` ([height, width, channels]) into `out` ([height, width, n]): the image
    /// padded into `scratch` (`scratchFloats`), the GEMM (B from `packWeights`, then + bias and
    /// ReLU) into the rows after it, those rows without the padding columns into `out`.
    /// `gemmScratch` is the GEMM's own (`GemmBF16.scratchFloats`).
    public func run(_ image: UnsafePointer<Float>, packed: UnsafePointer<Float>, n: Int, bias: UnsafePointer<Float>?, relu: Bool,
                    into out: UnsafeMutablePointer<Float>, scratch: UnsafeMutablePointer<Float>,
                    gemmScratch: UnsafeMutablePointer<Float>, path: BF16Path) {
        let padded = UnsafeMutableRawPointer(scratch).assumingMemoryBound(to: UInt16.self), gemmC = scratch + paddedFloats
        pad(image, into: padded)
        withUnsafeTemporaryAllocation(of: Int.self, capacity: blocks) { o in
            offsets(into: o.baseAddress!)
            GemmBF16.multiply(m: rows, n: n, k: k, aBlocks: padded, lda: channels, offsets: o.baseAddress!, b: .packed(packed),
                              c: gemmC, ldc: n, accumulate: false, bias: bias, relu: relu, scratch: gemmScratch, path: path)
        }
        compact(gemmC, columns: n, into: out)
    }
}
