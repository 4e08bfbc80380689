// rec_plugin's JVM half: sparkrec's row-level feature ops as Spark SQL functions (a jar holding a
// SparkSessionExtensions). Built by `make setup` (scripts/build_sql_jar.sh) with the sbt launcher
// fetched from Maven Central; only Maven Central is used (project/repositories).

// The Spark version is the one pinned for Python in pyproject.toml: one pin for both halves.
val sparkVersion = """"pyspark==([^"]+)"""".r
  .findFirstMatchIn(IO.read(file("pyproject.toml")))
  .map(_.group(1))
  .getOrElse(sys.error("pyproject.toml pins no pyspark version"))

// Spark's own JVM flags for Java 17 (what spark-submit passes), for the forked test JVM.
val sparkJavaOptions = Seq(
  "java.lang", "java.lang.invoke", "java.lang.reflect", "java.io", "java.net", "java.nio", "java.util",
  "java.util.concurrent", "java.util.concurrent.atomic", "sun.nio.ch", "sun.nio.cs", "sun.security.action",
  "sun.util.calendar"
).map(pkg => s"--add-opens=java.base/$pkg=ALL-UNNAMED") :+ "-Djdk.reflect.useDirectMethodHandle=false"

lazy val root = (project in file("."))
  .settings(
    name := "sparkrec-sql",
    organization := "io.sparkrec",
    version := "0.1.0",
    scalaVersion := "2.13.16", // the Scala of Spark 4.0.x
    Compile / scalaSource := baseDirectory.value / "rec_plugin" / "jvm" / "src" / "main" / "scala",
    Test / scalaSource := baseDirectory.value / "rec_plugin" / "jvm" / "src" / "test" / "scala",
    // The op definitions the Python ops read, packed into the jar as /op_templates.json.
    Compile / unmanagedResources := Seq(baseDirectory.value / "rec_plugin" / "op_templates.json"),
    Compile / unmanagedResourceDirectories := Nil,
    Test / resourceDirectory := baseDirectory.value / "rec_plugin" / "jvm" / "src" / "test" / "resources",
    libraryDependencies ++= Seq(
      "org.apache.spark" %% "spark-sql" % sparkVersion % Provided,
      "org.scalatest" %% "scalatest" % "3.2.19" % Test
    ),
    Test / fork := true,
    Test / javaOptions ++= sparkJavaOptions,
    Compile / packageBin / artifactPath := target.value / "sparkrec-sql.jar"
  )
