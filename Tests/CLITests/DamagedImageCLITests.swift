// `ptrain predict` on damaged PNG files, as a user runs it: exit 1 and one line on stderr naming
// the file and what is wrong (no crash report, nothing on stdout); a file that still holds every
// pixel is classified like the whole one.
import Foundation
import PTTestSupport
import Testing

@Test func predictOnADamagedPNGIsOneLineAndExit1() throws {
    let data = try tinyData(), dir = try runDir(), ck = dir + "/ck.st"
    defer { Scratch.remove(data); Scratch.remove(dir) }
    let made = try ptrain(["--data", data, "--spec", ckSpec, "--batch", "10", "--steps", "1", "--checkpoint", ck])
    #expect(made.status == 0, "\(made.err)")
    let (png, _) = DamagedPNG.sample(width: 8, height: 8, in: dir)
    _ = FileManager.default.createFile(atPath: dir + "/whole.png", contents: Data(png))
    let whole = try ptrain(["predict", "--checkpoint", ck, dir + "/whole.png"])
    #expect(whole.status == 0, "\(whole.err)")
    for damage in DamagedPNG.all(of: png) {
        let file = dir + "/damaged.png"
        _ = FileManager.default.createFile(atPath: file, contents: Data(damage.bytes))
        let r = try ptrain(["predict", "--checkpoint", ck, file])
        if let reason = damage.error {
            expectCleanError(r, code: 1, mentions: [file + ": ", reason])
            #expect(r.out.isEmpty, "\(damage.name): \(r.out)")
        } else {
            #expect(r.status == 0, "\(damage.name): \(r.err)")
            #expect(r.out.split(separator: ":", maxSplits: 1).last == whole.out.split(separator: ":", maxSplits: 1).last, "\(damage.name)")
        }
    }
}
