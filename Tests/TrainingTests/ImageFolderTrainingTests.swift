// Training from image folders: the same images train to the same bits whichever layout they
// were read from, and colour reaches the model only on the RGB path.
import Foundation
import PTModel
import PTTestSupport
import PTTraining
import Testing

private func trainer(_ data: Dataset, spec: String, threads: Int, steps: Int) throws -> Trainer {
    var c = TrainConfig()
    c.spec = try ModelSpec(parsing: spec); c.threads = threads; c.batch = 50; c.seed = 7; c.optimizer.lr = 1e-3
    let t = try Trainer(config: c, data: data)
    for _ in 0..<steps { t.trainStep() }
    return t
}

private func weightBits(_ t: Trainer) -> [UInt32] {
    (0..<t.network.parameters.count).map { t.network.weights[$0].bitPattern }
}

/// Fashion-MNIST's test set written as a PNG folder (class folders c0 ... c9, files numbered in
/// the set's order) reads back as the same bytes in class order, and trains to the bits of the
/// IDX images put in that order.
@Test func fashionMNISTWrittenAsAPNGFolderTrainsToTheIDXBits() throws {
    let idx = try Dataset.load(directory: Dataset.defaultDirectory, split: .test)
    let root = tempDir()
    defer { Scratch.remove(root) }
    for c in 0..<10 {
        makeDirectory("\(root)/train/c\(c)"); makeDirectory("\(root)/test/c\(c)")
    }
    let size = idx.sampleSize
    for i in 0..<idx.count {
        let px = Array(idx.pixels[(i * size)..<((i + 1) * size)])
        writePNG(String(format: "%@/train/c%d/%05d.png", root, Int(idx.labels[i]), i), width: 28, height: 28, channels: 1, pixels: px)
    }
    writePNG("\(root)/test/c0/0.png", width: 28, height: 28, channels: 1, pixels: Array(idx.pixels[0..<size]))
    let folder = try Dataset.load(directory: root, split: .train)
    #expect(folder.count == idx.count && folder.shape == idx.shape && folder.classNames == (0..<10).map { "c\($0)" })

    // The IDX set in the folder's order: by class, and within a class by index.
    let order = (0..<idx.count).sorted { (idx.labels[$0], $0) < (idx.labels[$1], $1) }
    let reordered = Dataset(count: idx.count, shape: idx.shape, pixels: order.flatMap { idx.pixels[($0 * size)..<(($0 + 1) * size)] },
                            labels: order.map { idx.labels[$0] }, classNames: folder.classNames)
    #expect(folder.labels == reordered.labels)
    #expect(folder.pixels == reordered.pixels)
    #expect(Normalization.of(folder) == Normalization.of(reordered))

    let spec = "conv(8,3) relu maxpool(2) fc(32) relu fc(10)"
    let fromFolder = try trainer(folder, spec: spec, threads: 2, steps: 20)
    let fromIDX = try trainer(reordered, spec: spec, threads: 2, steps: 20)
    let a = weightBits(fromFolder), b = weightBits(fromIDX)
    #expect(firstDifference(a, b) == nil)
    #expect(fromFolder.evaluate(folder).loss.bitPattern == fromIDX.evaluate(reordered).loss.bitPattern)
}

/// Two classes told apart by colour alone: red pixels or green pixels, each pixel's shade drawn
/// so that its grey value (as libpng converts it) has the same distribution in both classes.
/// Read as RGB the model learns it; read as grey it cannot do better than chance.
@Test func aTaskOfColourAloneIsLearnedOnlyOnTheRGBPath() throws {
    let root = tempDir()
    defer { Scratch.remove(root) }
    // libpng's grey for every red (r, 0, 0) and green (0, g, 0).
    let probe = root + "/probe.png"
    writePNG(probe, width: 512, height: 1, channels: 3,
             pixels: (0..<256).flatMap { [UInt8($0), 0, 0] } + (0..<256).flatMap { [0, UInt8($0), 0] })
    let grey = try ImageFile.read(probe, channels: 1).pixels
    var redFor: [UInt8: UInt8] = [:], greenFor: [UInt8: UInt8] = [:]
    for v in 0..<256 { redFor[grey[v]] = UInt8(v); greenFor[grey[256 + v]] = UInt8(v) }
    let shades = redFor.keys.filter { greenFor[$0] != nil && $0 > 0 }.sorted()
    #expect(shades.count > 50, "reds and greens share \(shades.count) grey values")

    var rng = SplitMix64(seed: 5)
    for (split, count) in [("train", 300), ("test", 100)] {
        for (c, name) in ["green", "red"].enumerated() {
            makeDirectory("\(root)/\(split)/\(name)")
            for i in 0..<count {
                let px = (0..<64).flatMap { _ -> [UInt8] in
                    let shade = shades[Int(rng.next() % UInt64(shades.count))]
                    return c == 1 ? [redFor[shade]!, 0, 0] : [0, greenFor[shade]!, 0]
                }
                writePNG(String(format: "%@/%@/%@/%03d.png", root, split, name, i), width: 8, height: 8, channels: 3, pixels: px)
            }
        }
    }
    let spec = "conv(8,3) relu maxpool(2) fc(16) relu fc(2)"
    func accuracy(channels: Int) throws -> Double {
        let train = try Dataset.load(directory: root, split: .train, channels: channels)
        let test = try Dataset.load(directory: root, split: .test, classNames: train.classNames, channels: channels)
        #expect(train.shape.c == channels && train.classNames == ["green", "red"])
        let t = try trainer(train, spec: spec, threads: 2, steps: 150)
        return t.evaluate(test).accuracy
    }
    let rgb = try accuracy(channels: 3), gray = try accuracy(channels: 1)
    #expect(rgb > 0.95, "RGB accuracy \(rgb)")
    // 200 test images: chance is 0.5 with a standard deviation of 0.035.
    #expect(gray < 0.65, "grey accuracy \(gray)")
}
