// The model spec language. A spec is a list of layers separated by spaces, commas or "->":
//
//   conv(64,3) relu maxpool(2) conv(128,3) relu maxpool(2) fc(1024) relu dropout(0.5) fc(10)
//
//   conv(OUT, K[, STRIDE][, stride=S][, pad=same|valid][, bias=false])
//                                                           K x K convolution, with a bias unless bias=false
//   bn (or batchnorm)                                       batch normalisation after a conv or fc
//   relu                                                    after a conv, fc or bn
//   maxpool(SIZE[, STRIDE]) / avgpool(SIZE[, STRIDE])       VALID windows; stride defaults to SIZE
//   gap (or globalavgpool)                                  the mean of each channel over the image
//   fc(OUT[, bias=false]) (or dense(...))                   fully connected, with a bias unless bias=false
//   dropout(KEEP)                                           keep probability in (0, 1], training only
//   res(LAYERS)                                             a residual block: x + F(x), F being the convs,
//                                                           bns and relus inside; when F changes the shape,
//                                                           x goes through a 1x1 conv (strided as F is)
//
// Shape: INPUT -> [[conv -> bn? -> relu? | res(...) -> relu?]* -> pool?]* -> gap? -> [fc -> bn? -> relu? (-> dropout)?]* -> fc.

public enum LayerSpec: Equatable, Sendable {
    case conv(out: Int, kernel: Int, stride: Int, same: Bool, bias: Bool = true)
    case batchNorm
    case relu
    case maxPool(size: Int, stride: Int)
    case avgPool(size: Int, stride: Int)
    case globalAvgPool
    case dense(out: Int, bias: Bool = true)
    case dropout(keep: Float)
    /// `res(` and its `)`: the layers between them are a residual block's F.
    case residualBegin
    case residualEnd

    var isConv: Bool { if case .conv = self { return true }; return false }

    /// The layer written back in spec syntax.
    public var text: String {
        switch self {
        case let .conv(out, k, s, same, bias):
            return "conv(\(out),\(k)" + (s != 1 ? ",stride=\(s)" : "") + (same ? "" : ",pad=valid") + (bias ? "" : ",bias=false") + ")"
        case .batchNorm: return "bn"
        case .relu: return "relu"
        case let .maxPool(size, s): return "maxpool(\(size)" + (s != size ? ",\(s)" : "") + ")"
        case let .avgPool(size, s): return "avgpool(\(size)" + (s != size ? ",\(s)" : "") + ")"
        case .globalAvgPool: return "gap"
        case let .dense(out, bias): return "fc(\(out)" + (bias ? "" : ",bias=false") + ")"
        case let .dropout(keep): return "dropout(\(keep))"
        case .residualBegin: return "res("
        case .residualEnd: return ")"
        }
    }
}

public struct SpecError: Error, CustomStringConvertible, Equatable {
    public var message: String
    /// 1-based column in the spec text.
    public var column: Int
    public var description: String { "model spec, column \(column): \(message)" }
}

public struct ModelSpec: Equatable, Sendable {
    public var layers: [LayerSpec]
    /// 1-based column where each layer starts, for error messages.
    public var columns: [Int]

    public static let reference =
        "conv(64,3) relu maxpool(2) conv(128,3) relu maxpool(2) fc(1024) relu dropout(0.5) fc(10)"
    /// The reference network, parsed (a constant the tests parse too: it cannot fail).
    public static let referenceModel = try! ModelSpec(parsing: reference)

    public var text: String {
        var out = ""
        for (i, layer) in layers.enumerated() {
            if i > 0 && layers[i - 1] != .residualBegin && layer != .residualEnd { out += " " }
            out += layer.text
        }
        return out
    }

    public init(layers: [LayerSpec]) {
        self.layers = layers
        columns = Array(repeating: 1, count: layers.count)
    }

    public init(parsing text: String) throws {
        var p = SpecParser(Array(text.utf8))
        (layers, columns) = try p.parse()
        try validateOrder()
    }

    /// The order rules (what `init(parsing:)` checks; a network built from `init(layers:)` checks them too).
    func validateOrder() throws {
        guard let last = layers.last else { throw SpecError(message: "the spec has no layers", column: 1) }
        var seenDense = false, inBlock = false
        for (i, layer) in layers.enumerated() {
            let col = columns[i]
            let prev: LayerSpec? = i > 0 ? layers[i - 1] : nil
            if inBlock {
                switch layer {
                case .conv, .batchNorm, .relu, .residualEnd: break
                case .residualBegin: throw SpecError(message: "a res(...) block cannot be inside another", column: col)
                default: throw SpecError(message: "'\(layer.text)' cannot be inside res(...): only conv, bn and relu can", column: col)
                }
            }
            switch layer {
            case .residualBegin:
                if seenDense { throw SpecError(message: "'res(' comes after a fc layer; residual blocks must come before", column: col) }
                // (A res( right inside is refused as nested, on its own column.)
                guard i + 1 < layers.count, layers[i + 1].isConv || layers[i + 1] == .residualBegin else {
                    throw SpecError(message: "a res(...) block must begin with a conv", column: col)
                }
                inBlock = true
            case .residualEnd:
                inBlock = false
            case .conv, .maxPool, .avgPool, .globalAvgPool:
                if seenDense {
                    throw SpecError(message: "'\(layer.text)' comes after a fc layer; convolutions and pools must come first", column: col)
                }
                if i == 0, !layer.isConv {
                    throw SpecError(message: "a pool cannot be the first layer", column: col)
                }
            case .batchNorm:
                switch prev {
                case .conv?, .dense?: break
                default: throw SpecError(message: "bn must directly follow a conv or fc layer", column: col)
                }
            case .relu:
                switch prev {
                case .conv?, .dense?, .batchNorm?, .residualEnd?: break
                default: throw SpecError(message: "relu must directly follow a conv, fc, bn or res(...) block", column: col)
                }
            case .dense:
                seenDense = true
            case .dropout:
                if i == 0 || i == layers.count - 1 {
                    throw SpecError(message: "dropout cannot be the first or last layer", column: col)
                }
                if case .dropout? = prev { throw SpecError(message: "two dropouts in a row", column: col) }
            }
        }
        guard case .dense = last else {
            throw SpecError(message: "the last layer must be fc(CLASSES), not '\(last.text)'", column: columns.last!)
        }
    }
}

/// Recursive-descent parser over the spec's bytes; every error carries the column it failed at.
struct SpecParser {
    let s: [UInt8]
    var i = 0
    init(_ s: [UInt8]) { self.s = s }

    static let names = "conv, bn, relu, maxpool, avgpool, gap, fc, dropout, res"
    /// Open `res(` blocks.
    var depth = 0

    mutating func parse() throws -> ([LayerSpec], [Int]) {
        var layers: [LayerSpec] = [], columns: [Int] = []
        skipSeparators()
        var opened = 0
        while i < s.count {
            columns.append(i + 1)
            if s[i] == UInt8(ascii: ")") {
                guard depth > 0 else { throw fail("')' without a res( to close") }
                depth -= 1; i += 1
                layers.append(.residualEnd)
            } else {
                let start = i
                let l = try layer()
                if l == .residualBegin { depth += 1; opened = start }
                layers.append(l)
            }
            skipSeparators()
        }
        if depth > 0 { throw fail("res( has no closing ')'", at: opened) }
        return (layers, columns)
    }

    mutating func skipSeparators() {
        while i < s.count {
            if s[i] == UInt8(ascii: " ") || s[i] == UInt8(ascii: ",") || s[i] == UInt8(ascii: "\t") || s[i] == UInt8(ascii: "\n") {
                i += 1
            } else if s[i] == UInt8(ascii: "-") && i + 1 < s.count && s[i + 1] == UInt8(ascii: ">") {
                i += 2
            } else {
                return
            }
        }
    }

    mutating func skipSpaces() { while i < s.count && s[i] == UInt8(ascii: " ") { i += 1 } }

    func isIdent(_ c: UInt8) -> Bool {
        (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c == UInt8(ascii: "_")
    }

    func fail(_ message: String, at col: Int? = nil) -> SpecError {
        SpecError(message: message, column: (col ?? i) + 1)
    }

    mutating func word() -> String {
        let start = i
        while i < s.count && isIdent(s[i]) { i += 1 }
        return String(decoding: s[start..<i], as: UTF8.self)
    }

    enum Arg { case positional(Double, Int), named(String, String, Int) }

    mutating func arguments() throws -> [Arg] {
        skipSpaces()
        guard i < s.count, s[i] == UInt8(ascii: "(") else { return [] }
        i += 1
        var args: [Arg] = []
        while true {
            skipSpaces()
            guard i < s.count else { throw fail("missing ')'") }
            if s[i] == UInt8(ascii: ")") { i += 1; return args }
            let start = i
            let token = word() + numberTail(from: start)
            if token.isEmpty {
                throw fail("unexpected '\(Character(UnicodeScalar(s[i])))' in the arguments")
            }
            skipSpaces()
            if i < s.count, s[i] == UInt8(ascii: "=") {
                i += 1; skipSpaces()
                let vstart = i
                let value = word() + numberTail(from: vstart)
                if value.isEmpty { throw fail("'\(token)=' needs a value", at: vstart) }
                args.append(.named(token, value, start))
            } else {
                guard let v = Double(token), v.isFinite else { throw fail("'\(token)' is not a number", at: start) }
                args.append(.positional(v, start))
            }
            skipSpaces()
            if i < s.count, s[i] == UInt8(ascii: ",") { i += 1 }
            else if i < s.count, s[i] != UInt8(ascii: ")") {
                throw fail("expected ',' or ')' but found '\(Character(UnicodeScalar(s[i])))'")
            }
        }
    }

    /// The rest of a number like "0.5" or "1e-3" after the identifier-like prefix that began at
    /// `tokenStart` ("1e" of "1e-3" is read as a word first).
    mutating func numberTail(from tokenStart: Int) -> String {
        let start = i
        while i < s.count, s[i] == UInt8(ascii: ".") || s[i] == UInt8(ascii: "-") || s[i] == UInt8(ascii: "+") || isIdent(s[i]) {
            if s[i] == UInt8(ascii: "-") || s[i] == UInt8(ascii: "+") {
                // Only as an exponent sign, after a digit and an 'e': "1e-3", "2.5E+2".
                let isDigit = { (c: UInt8) in c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9") }
                guard i - 2 >= tokenStart, s[i - 1] == UInt8(ascii: "e") || s[i - 1] == UInt8(ascii: "E"),
                      isDigit(s[i - 2]) || s[i - 2] == UInt8(ascii: ".") else { break }
            }
            i += 1
        }
        return String(decoding: s[start..<i], as: UTF8.self)
    }

    mutating func layer() throws -> LayerSpec {
        let start = i
        let name = word().lowercased()
        if name.isEmpty {
            throw fail("unexpected '\(Character(UnicodeScalar(s[i])))'; expected a layer (\(Self.names))")
        }
        if name == "res" {
            skipSpaces()
            guard i < s.count, s[i] == UInt8(ascii: "(") else { throw fail("res needs its layers in parentheses, as in res(conv(16,3) relu conv(16,3))") }
            i += 1
            return .residualBegin
        }
        let argsStart = i
        let args = try arguments()
        var positional: [(Double, Int)] = []
        var named: [String: (String, Int)] = [:]
        for a in args {
            switch a {
            case let .positional(v, c): positional.append((v, c))
            case let .named(k, v, c):
                if named[k] != nil { throw fail("'\(k)' given twice", at: c) }
                named[k] = (v, c)
            }
        }
        func int(_ idx: Int, _ what: String, key: String? = nil, default d: Int? = nil, min lo: Int = 1) throws -> Int {
            if let key, let (v, c) = named.removeValue(forKey: key) {
                guard let n = Int(v), n >= lo, n <= 1 << 20 else { throw fail("\(key)=\(v): \(what) must be a whole number from \(lo) to 1048576", at: c) }
                if idx < positional.count { throw fail("\(what) given twice", at: c) }
                return n
            }
            if idx < positional.count {
                let (v, c) = positional[idx]
                guard v == v.rounded(), v >= Double(lo), v <= Double(1 << 20) else {
                    throw fail("\(what) must be a whole number from \(lo) to 1048576, not \(v)", at: c)
                }
                return Int(v)
            }
            if let d { return d }
            throw fail("\(name) needs \(what)", at: argsStart)
        }
        /// key=true|false, true when not given.
        func flag(_ key: String) throws -> Bool {
            guard let (v, c) = named.removeValue(forKey: key) else { return true }
            switch v.lowercased() {
            case "true": return true
            case "false": return false
            default: throw fail("\(key)=\(v): must be true or false", at: c)
            }
        }
        func finish(_ maxPositional: Int, _ l: LayerSpec) throws -> LayerSpec {
            if positional.count > maxPositional {
                throw fail("\(name) takes at most \(maxPositional) plain arguments", at: positional[maxPositional].1)
            }
            if let (k, (_, c)) = named.first { throw fail("\(name) has no argument '\(k)'", at: c) }
            return l
        }
        switch name {
        case "conv":
            let out = try int(0, "an output channel count")
            let k = try int(1, "a kernel size", key: "k")
            let stride = try int(2, "a stride", key: "stride", default: 1)
            var same = true
            if let (v, c) = named.removeValue(forKey: "pad") {
                switch v.lowercased() {
                case "same": same = true
                case "valid": same = false
                default: throw fail("pad=\(v): padding must be same or valid", at: c)
                }
            }
            return try finish(3, .conv(out: out, kernel: k, stride: stride, same: same, bias: try flag("bias")))
        case "bn", "batchnorm":
            return try finish(0, .batchNorm)
        case "gap", "globalavgpool":
            return try finish(0, .globalAvgPool)
        case "relu":
            return try finish(0, .relu)
        case "maxpool", "avgpool":
            let size = try int(0, "a window size", key: "size")
            let stride = try int(1, "a stride", key: "stride", default: size)
            return try finish(2, name == "maxpool" ? .maxPool(size: size, stride: stride) : .avgPool(size: size, stride: stride))
        case "fc", "dense":
            return try finish(1, .dense(out: try int(0, "an output count"), bias: try flag("bias")))
        case "dropout":
            var keep: Double
            var col = argsStart
            if let (v, c) = named.removeValue(forKey: "keep") {
                guard let d = Double(v) else { throw fail("keep=\(v) is not a number", at: c) }
                keep = d; col = c
            } else if let (v, c) = positional.first {
                keep = v; col = c; positional.removeFirst()
            } else {
                throw fail("dropout needs a keep probability, as in dropout(0.5)", at: argsStart)
            }
            guard keep > 0 && keep <= 1 else { throw fail("dropout keep probability must be in (0, 1], not \(keep)", at: col) }
            // The layer keeps a Float: a keep so small that it rounds to 0 would scale by 1/0.
            guard Float(keep) >= Float.leastNormalMagnitude else {
                throw fail("dropout keep probability \(keep) is too small (below \(Float.leastNormalMagnitude))", at: col)
            }
            return try finish(0, .dropout(keep: Float(keep)))
        default:
            throw fail("unknown layer '\(name)'; expected one of \(Self.names)", at: start)
        }
    }
}
