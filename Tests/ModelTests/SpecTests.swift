import Testing
import PTModel

@Test func referenceSpecParses() throws {
    let s = try ModelSpec(parsing: ModelSpec.reference)
    #expect(s.layers == [.conv(out: 64, kernel: 3, stride: 1, same: true), .relu, .maxPool(size: 2, stride: 2),
                         .conv(out: 128, kernel: 3, stride: 1, same: true), .relu, .maxPool(size: 2, stride: 2),
                         .dense(out: 1024), .relu, .dropout(keep: 0.5), .dense(out: 10)])
    // The text form parses back to the same layers.
    #expect(try ModelSpec(parsing: s.text).layers == s.layers)
}

@Test func separatorsAndNamedArguments() throws {
    let s = try ModelSpec(parsing: "conv(8, k=5, stride=2, pad=valid) -> relu, avgpool(3,1) -> dense(16) relu dropout(keep=0.25) fc(10)")
    #expect(s.layers == [.conv(out: 8, kernel: 5, stride: 2, same: false), .relu, .avgPool(size: 3, stride: 1),
                         .dense(out: 16), .relu, .dropout(keep: 0.25), .dense(out: 10)])
}

@Test(arguments: [
    ("conv(64,3) relu maxpoo(2) fc(10)", 17, "unknown layer 'maxpoo'"),
    ("conv(64) relu fc(10)", 5, "needs a kernel size"),
    ("conv(64,3,pad=full) fc(10)", 11, "padding must be same or valid"),
    ("conv(64,3) relu fc(10) relu", 24, "the last layer must be fc"),
    ("fc(10) conv(4,3) fc(10)", 8, "comes after a fc layer"),
    ("relu fc(10)", 1, "relu must directly follow"),
    ("conv(64,3) relu dropout(1.5) fc(10)", 25, "keep probability must be in (0, 1]"),
    // Found by the spec fuzzer: positive as a Double, 0 as the layer's Float (1/keep would be inf).
    ("fc(8) relu dropout(keep=2.5e-86) fc(10)", 20, "too small"),
    ("conv(0,3) fc(10)", 6, "output channel count must be a whole number"),
    ("conv(64,3", 10, "missing ')'"),
    ("conv(64,3) fc(10) $", 19, "unexpected '$'"),
    ("", 1, "no layers"),
    ("fc(2.5)", 4, "whole number"),
    ("maxpool(2) fc(10)", 1, "cannot be the first layer"),
    ("conv(4,3,stride=2,stride=3) fc(10)", 19, "given twice"),
])
func specErrorsPointAtTheToken(_ c: (String, Int, String)) {
    let (text, column, fragment) = c
    do {
        _ = try ModelSpec(parsing: text)
        Issue.record("'\(text)' parsed")
    } catch let e as SpecError {
        #expect(e.column == column, "\(e)")
        #expect(e.description.contains(fragment), "\(e)")
        #expect(!e.description.contains("\n"))
    } catch {
        Issue.record("unexpected \(error)")
    }
}

@Test func shapesThatCannotWorkAreRefusedWithTheShapes() throws {
    let spec = try ModelSpec(parsing: "conv(4,3) relu maxpool(2) maxpool(2) maxpool(2) maxpool(2) maxpool(2) fc(10)")
    do {
        _ = try Network(spec: spec, input: Shape(h: 28, w: 28, c: 1), classes: 10, capacity: 1, threads: 1, seed: 1)
        Issue.record("a pool larger than its input was accepted")
    } catch let e as ShapeError {
        // 28 -> 14 -> 7 -> 3 -> 1: the fifth pool sees 1x1.
        #expect(e.message.contains("maxpool(2)") && e.message.contains("1x1x4"), "\(e)")
        #expect(e.message.contains("column 60"), "\(e)")
    }
    let wrongClasses = try ModelSpec(parsing: "fc(16) relu fc(7)")
    #expect(throws: ShapeError.self) {
        _ = try Network(spec: wrongClasses, input: Shape(h: 28, w: 28, c: 1), classes: 10, capacity: 1, threads: 1, seed: 1)
    }
    let valid = try ModelSpec(parsing: "conv(4,5,pad=valid) relu conv(4,5,pad=valid) fc(10)")
    #expect(throws: ShapeError.self) {
        _ = try Network(spec: valid, input: Shape(h: 6, w: 6, c: 1), classes: 10, capacity: 1, threads: 1, seed: 1)
    }
}

/// Numbers in exponent form, positional or named, parse; and a spec's printed form parses back
/// (including a tiny keep that prints in exponent form).
@Test func exponentNumbersParseAndPrintBack() throws {
    let s = try ModelSpec(parsing: "fc(8) relu dropout(1e-3) fc(16) relu dropout(keep=2.5E-1) fc(10)")
    #expect(s.layers == [.dense(out: 8), .relu, .dropout(keep: 0.001), .dense(out: 16), .relu, .dropout(keep: 0.25), .dense(out: 10)])
    let tiny = try ModelSpec(parsing: "fc(8) relu dropout(1.5e-37) fc(10)")
    #expect(try ModelSpec(parsing: tiny.text).layers == tiny.layers, "\(tiny.text)")
}
