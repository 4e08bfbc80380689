package sparkrec

import org.apache.spark.sql.{Row, SparkSession}
import org.apache.spark.sql.catalyst.expressions.ScalaUDF
import org.scalatest.BeforeAndAfterAll
import org.scalatest.funsuite.AnyFunSuite

class SparkrecExtensionsSuite extends AnyFunSuite with BeforeAndAfterAll {
  private lazy val spark = SparkSession
    .builder()
    .master("local[1]")
    .config("spark.ui.enabled", "false")
    .config("spark.sql.extensions", classOf[SparkrecExtensions].getName)
    .getOrCreate()

  override def afterAll(): Unit = spark.stop()

  private def one(sql: String): Row = spark.sql(sql).collect().head

  test("every op of op_templates.json is a function, its placeholders the arguments") {
    val names = OpTemplate.all.map(_.name).toSet
    assert(Set("fill_missing", "clip", "log", "normalize", "hash_bucket", "hashed_cross", "category_id").subsetOf(names))
    assert(OpTemplate.all.find(_.name == "clip").get.arguments == Seq("x", "min", "max"))
    OpTemplate.all.foreach(op => assert(spark.catalog.functionExists(op.sqlName), op.sqlName))
  }

  test("row-level ops compute what their templates say") {
    val row = one(
      """SELECT sparkrec_fill_missing(CAST(NULL AS INT), 0), sparkrec_clip(-3, 0, 10),
        |       sparkrec_clip(CAST(NULL AS INT), 0, 10), sparkrec_log(CAST(0 AS DOUBLE)),
        |       sparkrec_normalize(CAST(5 AS DOUBLE), CAST(3 AS DOUBLE), CAST(2 AS DOUBLE)),
        |       sparkrec_category_id(CAST(NULL AS BIGINT))""".stripMargin
    )
    assert(row.getInt(0) == 0 && row.getInt(1) == 0 && row.isNullAt(2))
    assert(row.getDouble(3) == 0.0 && row.getFloat(4) == 1.0f && row.getInt(5) == 0)
  }

  test("log takes a negative count as 0 and keeps a missing one missing, as the Python op and serving do") {
    val row = one(
      """SELECT sparkrec_log(CAST(-5 AS DOUBLE)), sparkrec_log(CAST(NULL AS DOUBLE)),
        |       sparkrec_log(CAST(3 AS DOUBLE)), log1p(CAST(3 AS DOUBLE))""".stripMargin
    )
    assert(row.getDouble(0) == 0.0 && row.isNullAt(1) && row.getDouble(2) == row.getDouble(3))
  }

  test("hash buckets are 1..n, 0 for missing, and the same as the built-ins they expand to") {
    val row = one(
      """SELECT sparkrec_hash_bucket('a1b2c3d4', 1000), CAST(pmod(xxhash64('a1b2c3d4'), 1000) AS INT) + 1,
        |       sparkrec_hash_bucket(CAST(NULL AS STRING), 1000), sparkrec_hashed_cross('a', 'b', 10)""".stripMargin
    )
    assert(row.getInt(0) == row.getInt(1) && row.getInt(2) == 0)
    assert(row.getInt(3) >= 1 && row.getInt(3) <= 10)
  }

  test("date parts are UTC hour and weekday ids from epoch seconds or milliseconds, 0 for missing") {
    // 2026-01-01T01:00:00Z is a Thursday; one second before 1970 is a Wednesday, 23:59:59.
    val row = one(
      """SELECT sparkrec_hour_of_day(1767229200L, 1), sparkrec_day_of_week(1767229200L, 1),
        |       sparkrec_hour_of_day(1767229200000L, 1000), sparkrec_hour_of_day(-1L, 1),
        |       sparkrec_day_of_week(-1L, 1), sparkrec_day_of_week(CAST(NULL AS BIGINT), 1)""".stripMargin
    )
    assert(row.getInt(0) == 2 && row.getInt(1) == 4 && row.getInt(2) == 2)
    assert(row.getInt(3) == 24 && row.getInt(4) == 3 && row.getInt(5) == 0)
  }

  test("functions expand to built-in expressions, never an opaque UDF") {
    val plan = spark.sql("SELECT sparkrec_clip(id, 0, 5) AS c, sparkrec_hash_bucket(id, 7) AS h FROM range(3)")
      .queryExecution.analyzed
    assert(plan.expressions.flatMap(_.collect { case udf: ScalaUDF => udf }).isEmpty)
    assert(plan.toString.contains("least") && plan.toString.contains("xxhash64"))
  }

  test("a wrong number of arguments is a clear error") {
    val error = intercept[Exception](spark.sql("SELECT sparkrec_clip(1, 2)").collect())
    assert(error.getMessage.contains("sparkrec_clip takes 3 arguments (x, min, max), got 2"))
  }
}
