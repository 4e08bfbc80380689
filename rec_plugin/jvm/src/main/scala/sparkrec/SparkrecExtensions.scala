package sparkrec

import com.fasterxml.jackson.databind.ObjectMapper
import org.apache.spark.sql.SparkSessionExtensions
import org.apache.spark.sql.catalyst.FunctionIdentifier
import org.apache.spark.sql.catalyst.analysis.UnresolvedAttribute
import org.apache.spark.sql.catalyst.expressions.{Expression, ExpressionInfo}
import org.apache.spark.sql.catalyst.parser.CatalystSqlParser

import scala.jdk.CollectionConverters._

/** Registers sparkrec's row-level feature ops as SQL functions `sparkrec_<op>`.
  *
  * Enabled with `spark.sql.extensions=sparkrec.SparkrecExtensions`. Every function is its op's
  * template from op_templates.json (the file the Python ops render too) with the call's arguments
  * put in for the placeholders, so it expands to built-in Catalyst expressions: nothing opaque to
  * the optimizer, and the RAPIDS Accelerator can run it on a GPU.
  */
class SparkrecExtensions extends (SparkSessionExtensions => Unit) {
  override def apply(extensions: SparkSessionExtensions): Unit =
    OpTemplate.all.foreach { op =>
      extensions.injectFunction((FunctionIdentifier(op.sqlName), op.info, op.build _))
    }
}

/** One op's SQL expression template; its placeholders, in order of first appearance, are the
  * SQL function's arguments (e.g. `clip({x}, {min}, {max})`).
  */
final case class OpTemplate(name: String, template: String) {
  import OpTemplate.Marker

  val sqlName: String = s"sparkrec_$name"

  val arguments: Seq[String] =
    "\\{(\\w+)\\}".r.findAllMatchIn(template).map(_.group(1)).toSeq.distinct

  /** The template parsed once, each placeholder an attribute named Marker + placeholder. */
  private lazy val body: Expression = CatalystSqlParser.parseExpression(
    arguments.foldLeft(template)((text, arg) => text.replace(s"{$arg}", s"`$Marker$arg`"))
  )

  def build(args: Seq[Expression]): Expression = {
    if (args.length != arguments.length) {
      throw new IllegalArgumentException(
        s"$sqlName takes ${arguments.length} arguments (${arguments.mkString(", ")}), got ${args.length}"
      )
    }
    val bound = arguments.zip(args).toMap
    body.transformUp {
      case UnresolvedAttribute(Seq(part)) if part.startsWith(Marker) => bound(part.stripPrefix(Marker))
    }
  }

  def info: ExpressionInfo = new ExpressionInfo(
    classOf[SparkrecExtensions].getName,
    null,
    sqlName,
    s"$sqlName(${arguments.mkString(", ")}) - $template",
    "",
    "",
    "",
    "",
    "",
    "",
    "built-in" // it expands to built-in expressions (Spark accepts only its own source names)
  )
}

object OpTemplate {
  private[sparkrec] val Marker = "__sparkrec_arg_"

  /** Every op of /op_templates.json (keys starting with `_` are comments). */
  lazy val all: Seq[OpTemplate] = {
    val stream = getClass.getResourceAsStream("/op_templates.json")
    require(stream != null, "op_templates.json is missing from the jar")
    try {
      new ObjectMapper()
        .readTree(stream)
        .fields()
        .asScala
        .filterNot(_.getKey.startsWith("_"))
        .map(entry => OpTemplate(entry.getKey, entry.getValue.asText()))
        .toSeq
    } finally stream.close()
  }
}
