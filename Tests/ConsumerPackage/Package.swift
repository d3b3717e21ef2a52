// swift-tools-version: 6.1
// Another package using ptrain as a library, as the README says to depend on it (here by path; a
// package elsewhere names the repository with a branch or revision). Built and run by CLITests
// (`anotherPackageBuildsOnTheLibraryAndTrains`).
import PackageDescription

let package = Package(
    name: "consumer",
    dependencies: [.package(name: "ptrain", path: "../..")],
    targets: [.executableTarget(name: "Consumer", dependencies: [.product(name: "PTrainKit", package: "ptrain")])],
    swiftLanguageModes: [.v6]
)
